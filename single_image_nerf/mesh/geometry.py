"""The surface of a finished model, two ways (docs/export.md says which the command takes and why, with figures):

- `level_set`: marching cubes on a coarse run's density at a level (refine/surface.py, shared with the seeding);
- `fused_depth`: the model's rendered depth from cameras all round (for Gaussians the median depth, where each
  pixel's opacity reaches one half, as its silhouette's edge is drawn), fused into a truncated signed distance on a
  grid and meshed at its zero crossing. A point outside any view's silhouette is outside the object (the visual
  hull), at its distance from that silhouette (sub-pixel, at the point's depth); a point inside every silhouette is
  no farther from the surface than the nearest silhouette edge, so the surface meets each silhouette between grid
  points. Points behind a rendered surface by more than the truncation are left unknown, and points no camera sees
  but every camera frames count as inside, so the result is closed; a point that some camera's image leaves out is
  outside unless a camera sees it (the object stands in every image). It works for any model that renders depth,
  the refine stage's Gaussians included. A photo's camera carves with the photo's own silhouette; a render's
  pinholes are filled rather than bored through, and cavities no camera can see into are filled.
  `smoothed` (Taubin's filter, which keeps the volume) can follow.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from single_image_nerf.mesh.source import Photo, Views, project
from single_image_nerf.refine.surface import DensityGrid, FieldFn, Surface, evaluate_grid, extract_surface

ALPHA_SURFACE = 0.5
"""Opacity above which a pixel shows the surface (below: free space), as the geometry score's back-projection."""
PINHOLE_FRACTION = 0.002
"""A hole in a silhouette smaller than this fraction of the silhouette's area is a pinhole of the render (the
Gaussians leave a few pixels open here and there), filled, not carved: a visual hull would bore it through the whole
object. A real opening (a mug's handle) is hundreds of times larger."""


def level_set(density_fn: FieldFn, aabb: np.ndarray, level: float, resolution: int, chunk: int = 1 << 16,
              progress=None) -> Surface:
    """Marching cubes on `density_fn` at `level` over `aabb` (a one-line error when it never crosses `level`)."""
    return extract_surface(evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=progress), level)


def fused_depth(views: Union[Views, Sequence[Views]], aabb: np.ndarray, resolution: int,
                truncation_voxels: float = 3.0, progress=None) -> Surface:
    """The zero crossing of the truncated signed distance fused from `views` (depth and opacity; one set of renders
    or several, of any sizes) on a `resolution`^3 grid over `aabb`; `truncation_voxels` is the truncation in grid
    spacings."""
    sets = [views] if isinstance(views, Views) else list(views)
    count = sum(each.rgb.shape[0] for each in sets)
    box = np.asarray(aabb, dtype=np.float64).reshape(2, 3)
    axes = [np.linspace(box[0, i], box[1, i], resolution) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    truncation = truncation_voxels * float(np.max((box[1] - box[0]) / (resolution - 1)))
    total = np.zeros(points.shape[0], dtype=np.float32)
    weight = np.zeros(points.shape[0], dtype=np.float32)
    carved = np.zeros(points.shape[0], dtype=np.float32)
    rim = np.full(points.shape[0], truncation, dtype=np.float32)
    framed = np.zeros(points.shape[0], dtype=np.int32)
    done = 0
    for each in sets:
        for index in range(each.rgb.shape[0]):
            # A point carved a full truncation out is outside for good: later views need not look at it.
            active = np.nonzero(carved < truncation)[0]
            observed, silhouette, in_image = signed_distances(each, index, points[active], truncation)
            empty = silhouette > 0.0
            carved[active] = np.maximum(carved[active], np.where(empty, silhouette, 0.0))
            rim[active] = np.minimum(rim[active], np.where(in_image & ~empty, -silhouette, truncation))
            seen = ~np.isnan(observed)
            total[active[seen]] += observed[seen]
            weight[active[seen]] += 1.0
            framed[active] += in_image
            done += 1
            if progress is not None:
                progress(done, count)
    fused = np.where(weight > 0, total / np.maximum(weight, 1.0), np.where(framed == count, -truncation, truncation))
    # Outside any view's silhouette is outside the object (the visual hull); inside, the surface is no farther than
    # the nearest silhouette's edge (the object fills each silhouette), which keeps the zero crossing on the edge.
    distance = np.where(carved > 0, carved, np.maximum(fused, -rim))
    distance = without_cavities(distance.reshape((resolution,) * 3), truncation)
    grid = DensityGrid(values=(-distance).astype(np.float32), aabb=box.astype(np.float32))
    return extract_surface(grid, 0.0)


def silhouette_distance(alpha: np.ndarray) -> np.ndarray:
    """(H, W) signed distance in pixels from each pixel centre to the silhouette's edge: positive outside the object,
    negative inside. Pixels on the edge (an empty one beside a covered one, or the reverse) place it by their own
    opacity, as an antialiased edge's coverage does (opacity 0.5: through the centre; 0.1: 0.4 px beyond it);
    the others by the distance to the nearest such pixel."""
    from scipy.ndimage import distance_transform_edt

    covered = without_pinholes(alpha >= ALPHA_SURFACE)
    if covered.all() or not covered.any():
        return np.where(covered, -1e6, 1e6)  # no silhouette in the image: far from it everywhere
    distance = np.where(covered, 0.5 - distance_transform_edt(covered), distance_transform_edt(~covered) - 0.5)
    on_edge = np.abs(distance) <= 0.5
    return np.where(on_edge, np.clip(ALPHA_SURFACE - alpha, -0.5, 0.5), distance)


def with_photo_silhouette(render: Views, photo: Photo) -> Views:
    """The model's `render` at a photo's camera with the photo's own silhouette (the user's mask is the truth where
    there is one); its depth is kept only where the render itself shows the surface."""
    depth = np.where(render.alpha >= ALPHA_SURFACE, render.depth, np.nan)
    return Views(cameras=render.cameras, rgb=render.rgb, alpha=photo.rgba[None, ..., 3], depth=depth)


def without_cavities(distance: np.ndarray, truncation: float) -> np.ndarray:
    """The signed distance grid with every pocket of outside that does not reach the grid's border (a cavity no
    camera can see into, bored by a stray depth) made inside."""
    from scipy import ndimage

    labels, _ = ndimage.label(distance > 0)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    cavity = (labels > 0) & ~np.isin(labels, border)
    return np.where(cavity, -truncation, distance)


def without_pinholes(covered: np.ndarray) -> np.ndarray:
    """`covered` (H, W) with its holes smaller than PINHOLE_FRACTION of its area filled."""
    from scipy import ndimage

    holes = ndimage.binary_fill_holes(covered) & ~covered
    if not holes.any():
        return covered
    labels, count = ndimage.label(holes)
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
    small = sizes < PINHOLE_FRACTION * covered.sum()
    small[0] = False
    return covered | small[labels]


def signed_distances(views: Views, index: int, points: np.ndarray, truncation: float):
    """(values, silhouette, in image) per point: the truncated distance in front of the surface that view `index`
    renders along its axis, NaN where the point is outside the image, behind the camera, hidden (more than the
    truncation behind the surface) or outside the silhouette; the signed distance from the silhouette's edge
    (the image distance, sub-pixel, at the point's depth; positive outside, truncated; NaN outside the image); and
    whether it falls in the image."""
    from scipy.ndimage import map_coordinates

    height, width = views.alpha.shape[1:]
    x, y, z = project(views.cameras, index, points)
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (z > 1e-3) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    rows, cols = row[inside], col[inside]
    gap = map_coordinates(silhouette_distance(views.alpha[index]), np.stack([y[inside] - 0.5, x[inside] - 0.5]),
                          order=1, mode="nearest")
    focal = float(views.cameras.fx[index].reshape(-1)[0])
    ahead = views.depth[index][rows, cols] - z[inside]
    unseen = (gap > 0.0) | (views.alpha[index][rows, cols] < ALPHA_SURFACE)  # outside, or a pinhole: no depth
    value = np.where(unseen | (ahead < -truncation), np.nan, np.clip(ahead, -truncation, truncation))
    values = np.full(points.shape[0], np.nan, dtype=np.float32)
    values[inside] = value
    silhouette = np.full(points.shape[0], np.nan, dtype=np.float32)
    silhouette[inside] = np.clip(gap * z[inside] / focal, -truncation, truncation)
    return values, silhouette, inside


def smoothed(surface: Surface, iterations: int) -> Surface:
    """The surface after `iterations` steps of Taubin's filter (smoothing that keeps the volume; 0: unchanged)."""
    if iterations <= 0:
        return surface
    import trimesh

    mesh = trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces, process=False)
    trimesh.smoothing.filter_taubin(mesh, iterations=iterations)
    return Surface(vertices=np.asarray(mesh.vertices, dtype=np.float32), faces=surface.faces)


def chosen_geometry(requested: str, has_density: bool) -> str:
    """The geometry `auto` stands for: the level set of a coarse run's density, the fused depth of anything else."""
    if requested != "auto":
        return requested
    return "level-set" if has_density else "fused-depth"


def describe(surface: Surface, name: Optional[str] = None) -> str:
    """`name: V vertices, F faces` for logs."""
    prefix = f"{name}: " if name else ""
    return f"{prefix}{len(surface.vertices)} vertices, {len(surface.faces)} faces"
