"""Scale- and shift-invariant depth loss on the foreground: 1 - Pearson correlation (as in Make-It-3D).

Monocular depth (DPT/MiDaS) is known only up to an unknown scale and shift, so the rendered depth is asked to be
linearly correlated with it rather than equal to it. Pearson correlation is invariant to a positive scale and any
shift of either input, so the loss is too; it is 0 for perfectly correlated inputs, 1 for uncorrelated ones and 2
for anti-correlated ones.

Conventions: `target_is_disparity=True` says the target is inverse depth (larger = nearer, DPT's output and
meta.json's "disparity"); the target is then negated so that it grows with distance like the rendered depth. This
is Make-It-3D's choice; it treats disparity as a linear proxy of depth, which is exact only up to first order.
A caller that prefers the exact relation can pass the rendered inverse depth (1 / depth) as `rendered` and the
disparity as `target` with `target_is_disparity=False`.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def pearson_depth_loss(
    rendered: Float[Tensor, "*shape"],
    target: Float[Tensor, "*shape"],
    mask: Optional[Bool[Tensor, "*shape"]] = None,
    target_is_disparity: bool = False,
    eps: float = 1e-8,
) -> Float[Tensor, ""]:
    """1 - Pearson correlation between `rendered` and `target` over the pixels where `mask` is True and both are finite.

    Inputs of any matching shape (for example a batch of rays, N or N×1) are flattened. Fewer than two masked
    pixels give 0 (no signal); a constant input gives 1 (correlation 0) and zero gradients, never NaN.
    The pixels are selected by weights (masked means, `(w x).sum() / w.sum()`), never by indexing with the mask,
    so nothing waits on the device.
    """
    if rendered.shape != target.shape:
        raise ValueError(f"rendered {tuple(rendered.shape)} and target {tuple(target.shape)} must have the same shape")
    x = rendered.reshape(-1)
    y = target.reshape(-1).to(x.dtype)
    if x.numel() < 2:  # known from the shape alone
        return rendered.sum() * 0.0
    keep = torch.isfinite(x) & torch.isfinite(y)
    if mask is not None:
        if mask.shape != rendered.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must have the shape of rendered {tuple(rendered.shape)}")
        keep = keep & mask.reshape(-1).bool()
    x = torch.where(keep, x, torch.zeros_like(x))  # no gradient and no NaN through the pixels left out
    y = torch.where(keep, y, torch.zeros_like(y))
    weight = keep.to(x.dtype)
    count = weight.sum()
    if target_is_disparity:
        y = -y
    x = _centred_unit_scale(x, weight, count)
    y = _centred_unit_scale(y, weight, count)
    variances = (x * x).sum() * (y * y).sum()
    correlation = torch.where(variances > eps, (x * y).sum() / torch.sqrt(variances.clamp_min(eps)), 0.0)
    return torch.where(count >= 2, 1.0 - correlation, rendered.sum() * 0.0)


def _centred_unit_scale(values: Tensor, weight: Tensor, count: Tensor) -> Tensor:
    """The kept values (weight 1) minus their mean, divided by their largest deviation (all 0 when they are
    constant); the values left out (weight 0) become 0.

    After this, a non-constant input has a sum of squares of at least 1, so `eps` never biases the correlation.
    The divisor is detached (Pearson correlation does not depend on it) and floored at a millionth of the mean
    magnitude, so that inputs constant up to rounding get small gradients instead of huge ones.
    """
    total = count.clamp_min(1.0)
    centred = (values - (weight * values).sum() / total) * weight
    floor = 1e-6 * (weight * values.detach().abs()).sum() / total + 1e-12
    return centred / torch.maximum(centred.detach().abs().max(), floor)


def per_view_pearson_depth_loss(
    rendered: Float[Tensor, "*shape"],
    target: Float[Tensor, "*shape"],
    mask: Bool[Tensor, "*shape"],
    views: Tensor,
    view_count: int,
    target_is_disparity: bool = False,
) -> Float[Tensor, ""]:
    """`pearson_depth_loss` of each reference view's pixels apart (`views` gives each pixel's view, in
    [0, view_count)), averaged over the views with at least two pixels kept: each photo's monocular depth has its
    own unknown scale and shift, so one correlation over the pooled pixels would ask them to agree. Selected by
    weights on the device, like `pearson_depth_loss`; nothing is read back."""
    views = views.reshape(mask.shape).to(mask.device)
    kept = mask.bool() & torch.isfinite(rendered) & torch.isfinite(target)
    losses, valid = [], []
    for view in range(view_count):
        selected = kept & (views == view)
        losses.append(pearson_depth_loss(rendered, target, selected, target_is_disparity))
        valid.append((selected.sum() >= 2).to(rendered.dtype))
    weights = torch.stack(valid)
    return (torch.stack(losses) * weights).sum() / weights.sum().clamp_min(1.0)
