"""Coarse field to Gaussian seeds: points on the density level set, colours from the albedo field, scales from the
distances to their nearest neighbours. A pure function over two field callables, plus a thin adapter for a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.refine.surface import FieldFn, ProgressFn, evaluate_grid, extract_surface, sample_surface


@dataclass
class GaussianSeeds:
    """Initial Gaussians in world coordinates (activated values, not logits or logs)."""

    means: Tensor
    """(N, 3) centres."""
    colors: Tensor
    """(N, 3) colours in [0, 1]."""
    scales: Tensor
    """(N, 3) standard deviations along the Gaussian's axes (isotropic at seeding)."""
    opacities: Tensor
    """(N, 1) opacities in (0, 1)."""

    def __len__(self) -> int:
        return self.means.shape[0]


def knn_scales(points: Tensor, k: int = 3, min_scale: float = 1e-4) -> Tensor:
    """(N, 3) isotropic scales: the mean distance of each point to its k nearest other points (splatfacto's rule)."""
    from scipy.spatial import cKDTree

    array = points.detach().cpu().numpy().astype(np.float64)
    k = max(1, min(k, array.shape[0] - 1))
    if array.shape[0] < 2:
        return torch.full((array.shape[0], 3), float(min_scale))
    distances, _ = cKDTree(array).query(array, k=k + 1)
    mean = np.maximum(distances[:, 1:].mean(axis=1), min_scale)
    return torch.from_numpy(mean).float()[:, None].expand(-1, 3).clone()


def nerf_to_gaussians(
    density_fn: FieldFn,
    albedo_fn: FieldFn,
    aabb: Tensor,
    level: float,
    num_points: int = 5000,
    resolution: int = 128,
    opacity: float = 0.5,
    k_neighbours: int = 3,
    scale_multiplier: float = 1.0,
    seed: int = 0,
    chunk: int = 1 << 16,
    progress: Optional[ProgressFn] = None,
) -> GaussianSeeds:
    """Seeds on the level set {density = level} of a field inside `aabb` (2, 3).

    The density is evaluated on a resolution^3 grid, its level set extracted by marching cubes, and `num_points`
    points drawn uniformly by area on it (reproducible from `seed`). Colours are `albedo_fn` at those points, scales
    `scale_multiplier` times the mean distance to the `k_neighbours` nearest seeds, and every opacity is `opacity`.
    Raises a one-line UserInputError when the density never crosses `level`.
    """
    grid = evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=progress)
    surface = extract_surface(grid, level)
    means = sample_surface(surface, num_points, torch.Generator().manual_seed(seed))
    colors = []
    with torch.no_grad():
        for start in range(0, means.shape[0], chunk):
            colors.append(albedo_fn(means[start:start + chunk]).float().cpu())
    return GaussianSeeds(
        means=means,
        colors=torch.cat(colors).clamp(0.0, 1.0),
        scales=knn_scales(means, k_neighbours) * scale_multiplier,
        opacities=torch.full((means.shape[0], 1), float(opacity)),
    )


def seeds_from_model(model, level: float, **kwargs) -> GaussianSeeds:
    """`nerf_to_gaussians` on a model exposing `query_density`, `query_albedo` and `scene_box` (the CoarseModel)."""
    was_training = model.training
    model.eval()
    try:
        return nerf_to_gaussians(model.query_density, model.query_albedo, model.scene_box.aabb.cpu(), level, **kwargs)
    finally:
        model.train(was_training)
