"""The surface of a finished model, two ways (docs/export.md says which the command takes and why, with figures):

- `level_set`: marching cubes on a coarse run's density at a level (refine/surface.py, shared with the seeding);
- `fused_depth`: the model's rendered depth from cameras all round, fused into a truncated signed distance on a
  grid and meshed at its zero crossing. Pixels the model leaves empty carve free space; points behind a rendered
  surface by more than the truncation are left unknown, and points no camera sees but every camera frames count as inside, so the
  result is closed; a point that some camera's image leaves out is outside unless a camera sees it (the object
  stands in every image). It works for any model that renders depth, the refine stage's Gaussians included.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from single_image_nerf.mesh.source import Views, project
from single_image_nerf.refine.surface import DensityGrid, FieldFn, Surface, evaluate_grid, extract_surface

ALPHA_SURFACE = 0.5
"""Opacity above which a pixel shows the surface (below: free space), as the geometry score's back-projection."""


def level_set(density_fn: FieldFn, aabb: np.ndarray, level: float, resolution: int, chunk: int = 1 << 16,
              progress=None) -> Surface:
    """Marching cubes on `density_fn` at `level` over `aabb` (a one-line error when it never crosses `level`)."""
    return extract_surface(evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=progress), level)


def fused_depth(views: Views, aabb: np.ndarray, resolution: int, truncation_voxels: float = 3.0,
                progress=None) -> Surface:
    """The zero crossing of the truncated signed distance fused from `views` (depth and opacity) on a
    `resolution`^3 grid over `aabb`; `truncation_voxels` is the truncation in grid spacings."""
    box = np.asarray(aabb, dtype=np.float64).reshape(2, 3)
    axes = [np.linspace(box[0, i], box[1, i], resolution) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    truncation = truncation_voxels * float(np.max((box[1] - box[0]) / (resolution - 1)))
    total = np.zeros(points.shape[0], dtype=np.float32)
    weight = np.zeros(points.shape[0], dtype=np.float32)
    framed = np.zeros(points.shape[0], dtype=np.int32)
    for index in range(views.rgb.shape[0]):
        observed, in_image = signed_distances(views, index, points, truncation)
        seen = ~np.isnan(observed)
        total[seen] += observed[seen]
        weight[seen] += 1.0
        framed += in_image
        if progress is not None:
            progress(index + 1, views.rgb.shape[0])
    distance = np.where(weight > 0, total / np.maximum(weight, 1.0), np.where(framed == views.rgb.shape[0], -truncation,
                                                                        truncation))
    grid = DensityGrid(values=(-distance).reshape((resolution,) * 3).astype(np.float32), aabb=box.astype(np.float32))
    return extract_surface(grid, 0.0)


def signed_distances(views: Views, index: int, points: np.ndarray, truncation: float):
    """(values, in image) per point: the truncated distance in front of the surface that view `index` renders along
    its axis, +truncation where the pixel is empty, NaN where the point is outside the image, behind the camera or
    hidden (more than the truncation behind the surface); and whether it falls in the image."""
    height, width = views.alpha.shape[1:]
    x, y, z = project(views.cameras, index, points)
    col, row = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (z > 1e-3) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    result = np.full(points.shape[0], np.nan, dtype=np.float32)
    rows, cols = row[inside], col[inside]
    alpha = views.alpha[index][rows, cols]
    ahead = views.depth[index][rows, cols] - z[inside]
    value = np.where(alpha < ALPHA_SURFACE, truncation, np.clip(ahead, -truncation, truncation))
    value = np.where((alpha >= ALPHA_SURFACE) & (ahead < -truncation), np.nan, value)
    result[inside] = value
    return result, inside


def chosen_geometry(requested: str, has_density: bool) -> str:
    """The geometry `auto` stands for: the level set of a coarse run's density, the fused depth of anything else."""
    if requested != "auto":
        return requested
    return "level-set" if has_density else "fused-depth"


def describe(surface: Surface, name: Optional[str] = None) -> str:
    """`name: V vertices, F faces` for logs."""
    prefix = f"{name}: " if name else ""
    return f"{prefix}{len(surface.vertices)} vertices, {len(surface.faces)} faces"
