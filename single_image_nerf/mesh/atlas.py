"""UV layout by xatlas, and which triangle covers each texel of a square texture (texture space rasterisation).

Row r of a texture image holds v = 1 - (r + 0.5) / size: image rows run top to bottom and v bottom to top, as glTF,
OBJ viewers and trimesh read them.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def uv_layout(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts: (vertex map into `vertices`, faces over the new vertices, (V', 2) uvs in [0, 1])."""
    import xatlas

    vmapping, new_faces, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float32)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Which triangle covers each texel centre of a `size`^2 texture, and where: (texel rows, texel cols, face ids,
    barycentric weights (K, 3))."""
    corners = uvs[faces] * size  # (F, 3, 2) in texel units, x = u * size, y = (1 - v) * size
    corners = np.stack([corners[..., 0], size - corners[..., 1]], axis=-1).astype(np.float64)
    low = np.clip(np.floor(corners.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    high = np.clip(np.ceil(corners.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    extent = high - low + 1  # (F, 2) texel box of each triangle, columns and rows
    counts = extent[:, 0] * extent[:, 1]
    face_ids = np.repeat(np.arange(faces.shape[0]), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = low[face_ids, 0] + offsets % extent[face_ids, 0]
    rows = low[face_ids, 1] + offsets // extent[face_ids, 0]
    centre = np.stack([cols + 0.5, rows + 0.5], axis=-1)
    a, b, c = (corners[face_ids, i] for i in range(3))
    v0, v1, v2 = b - a, c - a, centre - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    safe = np.where(np.abs(denominator) < 1e-12, 1.0, denominator)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / safe
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / safe
    weights = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)
    inside = (np.abs(denominator) >= 1e-12) & (weights >= -1e-6).all(axis=-1)
    return rows[inside], cols[inside], face_ids[inside], weights[inside]


def pad_seams(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every texel outside `covered` takes its nearest covered texel's colour, so that filtering across a chart's
    border never blends in the empty background."""
    from scipy.ndimage import distance_transform_edt

    if covered.all() or not covered.any():
        return image
    _, (rows, cols) = distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]


def to_uint8(colours: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] to uint8, rounded."""
    return np.round(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)
