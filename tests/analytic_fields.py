"""Analytic density and colour fields with known level sets, for the seeding and mesh-export tests."""

from __future__ import annotations

import torch
from torch import Tensor

SPHERE_RADIUS = 0.5
SPHERE_CENTRE = (0.1, -0.05, 0.0)
SPHERE_COLOUR = (0.8, 0.3, 0.1)
PEAK_DENSITY = 100.0
LEVEL = 50.0
"""The density equals LEVEL exactly on the sphere of SPHERE_RADIUS around SPHERE_CENTRE."""


def sphere_density(positions: Tensor) -> Tensor:
    """A soft ball: PEAK_DENSITY * sigmoid((radius - distance) / 0.03), (N, 1)."""
    distance = (positions - torch.tensor(SPHERE_CENTRE)).norm(dim=-1, keepdim=True)
    return PEAK_DENSITY * torch.sigmoid((SPHERE_RADIUS - distance) / 0.03)


def sphere_albedo(positions: Tensor) -> Tensor:
    """A constant colour (N, 3)."""
    return torch.tensor(SPHERE_COLOUR).expand(positions.shape[0], 3).clone()


def hemisphere_albedo(positions: Tensor) -> Tensor:
    """Red above z = 0, blue below (N, 3): checks that colours follow positions."""
    up = (positions[:, 2:3] > 0).float()
    return up * torch.tensor([1.0, 0.0, 0.0]) + (1 - up) * torch.tensor([0.0, 0.0, 1.0])
