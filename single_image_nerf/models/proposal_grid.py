"""Proposal density: a dense grid of log-densities over the scene box, trilinearly interpolated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nerfstudio.field_components.activations import trunc_exp


class DenseDensityGrid(nn.Module):
    """Density for the proposal sampler: `exp` of a trilinearly interpolated dense grid of log-densities spanning
    the scene box, zero outside it. The proposal sampler only needs a coarse density that bounds the field's
    weights (it is trained by the interlevel loss alone); one `grid_sample` gives it at a few per cent of the cost
    of a hash grid and MLP on the CPU (1 M points: about 0.03 s forward, 0.2 s backward at 128^3 on one thread),
    and the same on CUDA."""

    def __init__(self, aabb: Tensor, resolution: int) -> None:
        super().__init__()
        if resolution < 2:
            raise ValueError(f"a proposal grid needs a resolution of at least 2, got {resolution}")
        self.register_buffer("aabb", aabb.clone())
        self.log_density = nn.Parameter(torch.zeros(1, 1, resolution, resolution, resolution))
        """Log-densities at the grid vertices, indexed [z, y, x] (grid_sample's order); the first and last vertices of
        each axis lie on the box's faces."""

    def density_fn(self, positions: Tensor, times: Tensor | None = None) -> Tensor:  # noqa: ARG002
        """Density (N.., 1) at world positions (N.., 3)."""
        low, high = self.aabb[0], self.aabb[1]
        normalized = (positions - low) / (high - low) * 2.0 - 1.0
        inside = (normalized.abs() <= 1.0).all(dim=-1, keepdim=True)
        grid_points = normalized.reshape(1, -1, 1, 1, 3).to(self.log_density.dtype)
        sampled = F.grid_sample(self.log_density, grid_points, mode="bilinear", padding_mode="border",
                                align_corners=True)
        return trunc_exp(sampled.reshape(*positions.shape[:-1], 1)) * inside
