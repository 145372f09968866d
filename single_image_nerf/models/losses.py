"""Reference-view and regularisation losses of the coarse stage, as pure functions."""

from __future__ import annotations

import torch
from torch import Tensor


def composite(rgb: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Straight colour over a background: rgb * alpha + background * (1 - alpha)."""
    return rgb * alpha + background * (1.0 - alpha)


def binary_entropy(accumulation: Tensor, eps: float = 1e-5) -> Tensor:
    """Mean binary entropy of the opacity: pushes every ray to be empty or solid."""
    a = accumulation.clamp(eps, 1.0 - eps)
    return -(a * torch.log(a) + (1.0 - a) * torch.log(1.0 - a)).mean()


def normal_smoothness_2d(normals: Tensor, accumulation: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels of a rendered normal map (B, H, W, 3), weighted by the
    opacity of both pixels so that the silhouette edge is not penalised."""
    dx = (normals[:, :, 1:] - normals[:, :, :-1]).abs().sum(-1) * (accumulation[:, :, 1:, 0] * accumulation[:, :, :-1, 0])
    dy = (normals[:, 1:] - normals[:, :-1]).abs().sum(-1) * (accumulation[:, 1:, :, 0] * accumulation[:, :-1, :, 0])
    return 0.5 * (dx.mean() + dy.mean())
