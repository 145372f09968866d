"""Baking a texture over fixed geometry: each texel takes the photo's own pixel where a photo's camera sees its
surface point (visibility tested by ray casting), elsewhere the finished model's render from the most head-on of
many views that see it; a texel no view sees takes the colour of the nearest seen surface point (in space: on a
crumbly atlas its nearest texel may lie on another chart), and the empty texels between charts their nearest
texel's colour (seam padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from single_image_nerf.mesh.atlas import pad_seams, rasterize_uv
from single_image_nerf.mesh.raycast import Raycaster
from single_image_nerf.mesh.source import Photo, Views, project

PHOTO_MIN_COSINE = 0.1
"""A photo colours a texel only where its camera sees the surface at least this head-on (cosine between the normal
and the direction to the camera): at grazing angles one photo pixel smears over many texels."""
PHOTO_SAMPLING_ORDER = 0
"""How a texel samples the photo: 0, the pixel its point falls in (a photo pixel is the mean colour over its area, so
texels that tile it reproduce it exactly when the mesh is drawn with area sampling); 1, bilinear (which blurs a
sharp edge once more when the mesh is drawn)."""
SURFACE_ALPHA = 0.5
"""A photo's or a render's pixel shows the object where its opacity exceeds this."""
VISIBILITY_PIXELS = 2.0
"""A texel's point is visible from a camera when the camera's ray through its pixel stops no more than this many
pixel footprints (at the point's depth) before it."""


@dataclass
class Bake:
    """A baked texture and where its texels came from."""

    texture: np.ndarray
    """(S, S, 3) colours in [0, 1], seams padded."""
    from_photo: int
    """Covered texels coloured by a photo."""
    from_renders: int
    """Covered texels coloured by a render of the model."""
    unseen: int
    """Covered texels no view saw (coloured from the nearest seen surface point)."""


def texel_points(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int):
    """(rows, cols, surface points (K, 3), unit face normals (K, 3)) of every covered texel."""
    rows, cols, face_ids, weights = rasterize_uv(uvs, faces, size)
    corners = vertices[faces].astype(np.float64)
    points = np.einsum("kj,kjd->kd", weights, corners[face_ids])
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    return rows, cols, points, normals[face_ids]


def seen_from(raycaster: Raycaster, cameras, index: int, points: np.ndarray, normals: np.ndarray):
    """(visible mask, x, y, cosine) of `points` in camera `index`: in the image, facing the camera, and not hidden
    by the mesh (the camera's ray through the pixel reaches the point)."""
    hits = raycaster.cast(cameras, index)
    height, width = hits.face_ids.shape
    x, y, z = project(cameras, index, points)
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (z > 1e-6) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    origin = cameras.camera_to_worlds[index, :3, 3].detach().cpu().numpy().astype(np.float64)
    towards = origin - points
    distance = np.linalg.norm(towards, axis=-1)
    cosine = np.einsum("kd,kd->k", normals, towards) / np.maximum(distance, 1e-12)
    focal = float(cameras.fx[index].reshape(-1)[0])
    tolerance = VISIBILITY_PIXELS * np.maximum(z, 0.0) / focal / np.maximum(cosine, 0.2) + 1e-4
    reach = np.full(points.shape[0], -np.inf)
    reach[inside] = hits.distance[row[inside], col[inside]]
    visible = inside & (cosine > 0.0) & (reach >= distance - tolerance)
    return visible, x, y, cosine


def sample_image(image: np.ndarray, x: np.ndarray, y: np.ndarray, order: int = 1) -> np.ndarray:
    """Samples (K, C) of an (H, W, C) image at pixel coordinates (pixel centres at +0.5): bilinear (`order` 1) or
    the pixel each falls in (0)."""
    from scipy.ndimage import map_coordinates

    coordinates = np.stack([y - 0.5, x - 0.5])
    return np.stack([map_coordinates(image[..., channel], coordinates, order=order, mode="nearest")
                     for channel in range(image.shape[-1])], axis=-1)


def sample_straight(rgba: np.ndarray, x: np.ndarray, y: np.ndarray, order: int = 1) -> np.ndarray:
    """Samples (K, 4) of a straight-alpha (H, W, 4) image (`order` as `sample_image`'s): colour filtered
    premultiplied and divided back, so that an empty neighbour's colour never bleeds into an edge texel."""
    alpha = rgba[..., 3:4]
    sampled = sample_image(np.concatenate([rgba[..., :3] * alpha, alpha], axis=-1), x, y, order)
    sampled[:, :3] /= np.maximum(sampled[:, 3:4], 1e-6)
    return sampled


def bake(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int, photos: List[Photo],
         views: Views) -> Bake:
    """The texture of the mesh (`vertices`, `faces`, per-vertex `uvs`) at `size`^2 texels from `photos` first,
    then the most head-on of `views`."""
    raycaster = Raycaster(vertices, faces)
    rows, cols, points, normals = texel_points(vertices, faces, uvs, size)
    colour = np.zeros((points.shape[0], 3), dtype=np.float64)
    from_photo = np.zeros(points.shape[0], dtype=bool)
    for photo in photos:
        visible, x, y, cosine = seen_from(raycaster, photo.camera, 0, points, normals)
        use = np.nonzero(visible & ~from_photo & (cosine > PHOTO_MIN_COSINE))[0]
        sampled = sample_straight(photo.rgba, x[use], y[use], PHOTO_SAMPLING_ORDER)
        shown = sampled[:, 3] > SURFACE_ALPHA
        colour[use[shown]] = sampled[shown, :3]
        from_photo[use[shown]] = True
    best = np.where(from_photo, np.inf, -np.inf)
    for index in range(views.rgb.shape[0]):
        visible, x, y, cosine = seen_from(raycaster, views.cameras, index, points, normals)
        better = np.nonzero(visible & (cosine > best))[0]
        if better.size == 0:
            continue
        rgba = np.concatenate([views.rgb[index], views.alpha[index][..., None]], axis=-1)
        sampled = sample_straight(rgba, x[better], y[better])
        shown = sampled[:, 3] > SURFACE_ALPHA
        better = better[shown]
        colour[better] = sampled[shown, :3]
        best[better] = cosine[better]
    baked = best > -np.inf
    if baked.any() and not baked.all():
        colour[~baked] = colour[baked][nearest(points[baked], points[~baked])]
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[rows, cols] = colour
    filled = np.zeros((size, size), dtype=bool)
    filled[rows, cols] = baked.any()
    return Bake(texture=pad_seams(image, filled), from_photo=int(from_photo.sum()),
                from_renders=int(baked.sum() - from_photo.sum()), unseen=int((~baked).sum()))


def nearest(known: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index into `known` (K, 3) of the point nearest each of `queries` (Q, 3)."""
    from scipy.spatial import cKDTree

    return cKDTree(known).query(queries, workers=-1)[1]
