"""Reference-view and regularisation losses of both stages, as pure functions, and the weights both share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional

import torch
from torch import Tensor

from single_image_nerf.models.depth_loss import pearson_depth_loss, per_view_pearson_depth_loss


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


@dataclass
class SharedLossWeights:
    """The loss weights both stages' model configs share: the reference-view losses and the novel-view opacity
    regulariser."""

    rgb_loss_mult: float = 1000.0
    """Weight of the reference-view colour loss."""
    mask_loss_mult: float = 500.0
    """Weight of the reference-view mask (opacity) loss."""
    depth_loss_mult: float = 10.0
    """Weight of the scale- and shift-invariant depth loss (used when the data has depth)."""
    opacity_regularizer: Literal["entropy", "opacity", "none"] = "entropy"
    """Novel-view opacity regulariser: binary entropy (solid or empty) or mean opacity (sparsity)."""
    opacity_loss_mult: float = 1e-3
    """Weight of the opacity regulariser."""


def opacity_regularization(accumulation: Tensor, config: SharedLossWeights) -> Dict[str, Tensor]:
    """{"opacity_loss": ...} of novel-view opacities under `config`'s regulariser, or {} when it is off."""
    if config.opacity_loss_mult <= 0 or config.opacity_regularizer == "none":
        return {}
    penalty = binary_entropy(accumulation) if config.opacity_regularizer == "entropy" else accumulation.mean()
    return {"opacity_loss": config.opacity_loss_mult * penalty}


def reference_view_losses(outputs: Dict[str, Tensor], target: Tensor, alpha: Tensor, depth: Optional[Tensor],
                          config, views: Optional[Tensor] = None, view_count: int = 1) -> Dict[str, Tensor]:
    """Both stages' reference-view losses, weighted by `config`'s rgb/mask/depth_loss_mult: colour against `target`
    (composited on the render's background), opacity against `alpha`, and, where `depth` is given, the scale- and
    shift-invariant depth loss on the foreground. With several reference views (`view_count` > 1, `views` the view
    of each ray), colour and mask pool every view's rays and the depth loss is matched view by view (each photo's
    depth has its own scale and shift)."""
    losses = {
        "rgb_loss": config.rgb_loss_mult * torch.mean((outputs["rgb"] - target) ** 2),
        "mask_loss": config.mask_loss_mult * torch.mean((outputs["accumulation"] - alpha) ** 2),
    }
    if depth is not None and config.depth_loss_mult > 0:
        depth = depth.reshape(outputs["depth"].shape)
        mask = (alpha > 0.5) & torch.isfinite(depth)
        if view_count > 1 and views is not None:
            loss = per_view_pearson_depth_loss(outputs["depth"], depth, mask, views, view_count)
        else:
            loss = pearson_depth_loss(outputs["depth"], depth, mask)
        losses["depth_loss"] = config.depth_loss_mult * loss
    return losses
