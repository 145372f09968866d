"""Level sets of a density field, as pure functions: grid evaluation, marching cubes, area-uniform surface samples.

Shared by the Gaussian seeding (nerf_to_gaussians.py) and the mesh export (scripts/export_mesh.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.errors import UserInputError

FieldFn = Callable[[Tensor], Tensor]
"""A field queried at world positions (N, 3): density (N, 1) or colour (N, 3)."""
ProgressFn = Callable[[int, int], None]
"""Called as progress(done, total) while a long evaluation runs."""


@dataclass
class DensityGrid:
    """Density sampled at the corners of a regular grid over an axis-aligned box."""

    values: np.ndarray
    """(R, R, R) densities, indexed [x, y, z]."""
    aabb: np.ndarray
    """(2, 3) box: the first and last samples along each axis sit on its faces."""

    @property
    def spacing(self) -> np.ndarray:
        """Distance between neighbouring samples along each axis."""
        return (self.aabb[1] - self.aabb[0]) / (np.array(self.values.shape) - 1)


@dataclass
class Surface:
    """A triangle mesh in world coordinates."""

    vertices: np.ndarray
    """(V, 3) float positions."""
    faces: np.ndarray
    """(F, 3) int vertex indices, counter-clockwise seen from outside (outward normals)."""

    def face_areas(self) -> np.ndarray:
        """(F,) triangle areas."""
        a, b, c = (self.vertices[self.faces[:, i]] for i in range(3))
        return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1)


def evaluate_grid(
    density_fn: FieldFn, aabb: Tensor | np.ndarray, resolution: int, chunk: int = 1 << 16,
    progress: Optional[ProgressFn] = None,
) -> DensityGrid:
    """Evaluate `density_fn` at resolution^3 grid corners spanning `aabb` (chunked, without gradients)."""
    if resolution < 2:
        raise UserInputError(f"grid resolution must be at least 2, got {resolution}")
    box = np.asarray(torch.as_tensor(aabb, dtype=torch.float32).cpu(), dtype=np.float32).reshape(2, 3)
    axes = [torch.linspace(float(box[0, i]), float(box[1, i]), resolution) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    values = np.empty(points.shape[0], dtype=np.float32)
    with torch.no_grad():
        for start in range(0, points.shape[0], chunk):
            density = density_fn(points[start:start + chunk])
            values[start:start + chunk] = density.reshape(-1).float().cpu().numpy()
            if progress is not None:
                progress(min(start + chunk, points.shape[0]), points.shape[0])
    return DensityGrid(values=values.reshape(resolution, resolution, resolution), aabb=box)


def extract_surface(grid: DensityGrid, level: float) -> Surface:
    """The closed level set {density = level} by marching cubes, with outward-facing triangles.

    The grid is padded with empty samples so that a surface touching the box is closed rather than cut open.
    """
    from skimage.measure import marching_cubes

    values = np.nan_to_num(grid.values, nan=0.0, posinf=np.finfo(np.float32).max)
    low, high = float(values.min()), float(values.max())
    if not (low < level < high):
        raise UserInputError(
            f"the density never crosses level {level:g} (it spans {low:.3g} to {high:.3g} in the box): "
            f"choose a level inside that range"
        )
    padded = np.pad(values, 1, mode="constant", constant_values=min(low, level) - 1.0)
    vertices, faces, _, _ = marching_cubes(padded, level=level, spacing=tuple(grid.spacing.tolist()))
    vertices = vertices - grid.spacing + grid.aabb[0]
    faces = faces.astype(np.int64)
    surface = Surface(vertices=vertices.astype(np.float32), faces=faces)
    if signed_volume(surface) < 0:
        surface.faces = faces[:, ::-1].copy()
    return surface


def signed_volume(surface: Surface) -> float:
    """Volume enclosed by a closed mesh (positive when its triangles face outward)."""
    a, b, c = (surface.vertices[surface.faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def sample_surface(surface: Surface, count: int, generator: torch.Generator) -> Tensor:
    """`count` points (count, 3) spread uniformly by area over the mesh."""
    areas = torch.from_numpy(surface.face_areas().astype(np.float64))
    if count <= 0 or float(areas.sum()) <= 0:
        raise UserInputError(f"cannot sample {count} points from a surface of area {float(areas.sum()):.3g}")
    face_ids = torch.multinomial(areas, count, replacement=True, generator=generator)
    u, v = torch.rand(2, count, 1, generator=generator, dtype=torch.float64)
    flip = (u + v) > 1.0
    u, v = torch.where(flip, 1.0 - u, u), torch.where(flip, 1.0 - v, v)
    triangles = torch.from_numpy(surface.vertices.astype(np.float64))[torch.from_numpy(surface.faces)[face_ids]]
    points = triangles[:, 0] + u * (triangles[:, 1] - triangles[:, 0]) + v * (triangles[:, 2] - triangles[:, 0])
    return points.float()
