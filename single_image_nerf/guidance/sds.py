"""Score distillation sampling (DreamFusion) as pure functions: timestep schedule, weighting, classifier-free
guidance and the loss whose gradient on the latents is w(t) (eps_hat - eps).

Notation: z are the clean latents of the renders, eps the noise added, z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps,
eps_hat the guided noise prediction of the frozen UNet at (z_t, t), abar_t the cumulative product of the alphas.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple

import torch
from torch import Tensor

AnnealKind = Literal["none", "linear", "sqrt", "step"]
Weighting = Literal["sds", "sqrt", "uniform", "fantasia3d"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]


def anneal_progress(step: int, kind: AnnealKind, start_step: int, steps: int) -> float:
    """Progress in [0, 1] of the annealing at `step`: 0 before `start_step`, 1 after `start_step + steps`.

    "linear" moves evenly; "sqrt" moves fast early and slowly late (HiFA's square-root schedule, threestudio's
    `sqrt_anneal`); "step" jumps from 0 to 1 at `start_step + steps` (ProlificDreamer's threestudio configs);
    "none" stays at 0.
    """
    if kind == "none":
        return 0.0
    if kind == "step":
        return 1.0 if step >= start_step + steps else 0.0
    linear = 1.0 if steps <= 0 else min(max((step - start_step) / steps, 0.0), 1.0)
    if step < start_step:
        linear = 0.0
    if kind == "linear":
        return linear
    if kind == "sqrt":
        return math.sqrt(linear)
    raise ValueError(f"unknown annealing schedule {kind!r}")


def timestep_range(
    step: int,
    start: Tuple[float, float],
    end: Tuple[float, float],
    kind: AnnealKind,
    start_step: int,
    steps: int,
) -> Tuple[float, float]:
    """(t_min, t_max) as fractions of the training timesteps at `step`, moved from `start` to `end` by the
    annealing progress."""
    progress = anneal_progress(step, kind, start_step, steps)
    t_min = start[0] + progress * (end[0] - start[0])
    t_max = start[1] + progress * (end[1] - start[1])
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"timestep range must satisfy 0 <= t_min <= t_max <= 1, got ({t_min}, {t_max})")
    return t_min, t_max


def timestep_bounds(t_min: float, t_max: float, num_train_timesteps: int) -> Tuple[int, int]:
    """Integer timesteps [low, high] (inclusive) for fractions (t_min, t_max) of `num_train_timesteps`."""
    high = min(int(t_max * num_train_timesteps), num_train_timesteps - 1)
    low = min(int(t_min * num_train_timesteps), high)
    return low, high


def sample_timesteps(
    count: int, t_min: float, t_max: float, num_train_timesteps: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    """`count` integer timesteps drawn uniformly from the inclusive bounds of (t_min, t_max), on the CPU."""
    low, high = timestep_bounds(t_min, t_max, num_train_timesteps)
    return torch.randint(low, high + 1, (count,), generator=generator, dtype=torch.long)


def sds_weight(alphas_cumprod_t: Tensor, kind: Weighting) -> Tensor:
    """w(t) for each sample: "sds" is 1 - abar_t (DreamFusion's sigma_t^2), "sqrt" is sqrt(1 - abar_t),
    "uniform" is 1, "fantasia3d" is sqrt(abar_t) (1 - abar_t)."""
    if kind == "sds":
        return 1.0 - alphas_cumprod_t
    if kind == "sqrt":
        return torch.sqrt(1.0 - alphas_cumprod_t)
    if kind == "uniform":
        return torch.ones_like(alphas_cumprod_t)
    if kind == "fantasia3d":
        return torch.sqrt(alphas_cumprod_t) * (1.0 - alphas_cumprod_t)
    raise ValueError(f"unknown weighting {kind!r}")


def add_noise(latents: Tensor, noise: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps, with abar_t of shape (B,)."""
    abar = alphas_cumprod_t.reshape(-1, *([1] * (latents.dim() - 1))).to(latents.dtype)
    return abar.sqrt() * latents + (1.0 - abar).sqrt() * noise


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """eps_uncond + s (eps_cond - eps_uncond): s = 1 is the conditional prediction, s = 0 the unconditional."""
    return eps_uncond + float(scale) * (eps_cond - eps_uncond)


def to_epsilon(model_output: Tensor, noisy: Tensor, alphas_cumprod_t: Tensor, prediction_type: str) -> Tensor:
    """The noise prediction from a UNet output of any diffusers `prediction_type` (SD 1.x and 2.x-base predict
    epsilon; SD 2.x at 768 px predicts v = sqrt(abar) eps - sqrt(1 - abar) z)."""
    if prediction_type == "epsilon":
        return model_output
    abar = alphas_cumprod_t.reshape(-1, *([1] * (noisy.dim() - 1))).to(noisy.dtype)
    if prediction_type == "v_prediction":
        return abar.sqrt() * model_output + (1.0 - abar).sqrt() * noisy
    if prediction_type == "sample":
        return (noisy - abar.sqrt() * model_output) / (1.0 - abar).sqrt()
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def predicted_original(noisy: Tensor, eps: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """One-step denoising: z_0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    abar = alphas_cumprod_t.reshape(-1, *([1] * (noisy.dim() - 1))).to(noisy.dtype)
    return (noisy - (1.0 - abar).sqrt() * eps) / abar.sqrt()


def sds_gradient(eps_hat: Tensor, noise: Tensor, weight: Tensor, clip: Optional[float] = None) -> Tensor:
    """w(t) (eps_hat - eps), optionally clamped element-wise to [-clip, clip] (threestudio's `grad_clip`)."""
    grad = weight.reshape(-1, *([1] * (eps_hat.dim() - 1))).to(eps_hat.dtype) * (eps_hat - noise)
    if clip is not None:
        grad = grad.clamp(-clip, clip)
    return grad


def sds_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """0.5 ||z - stopgrad(z - grad)||^2 / B: its gradient on each sample's latents is grad / B, and its value is
    0.5 ||grad||^2 / B (a useful magnitude to log, not a quantity that decreases)."""
    target = (latents - grad).detach()
    return 0.5 * ((latents - target) ** 2).sum() / latents.shape[0]


def is_finite(tensor: Tensor) -> bool:
    """True when every element is finite (one host sync)."""
    return bool(torch.isfinite(tensor).all())


def all_finite(*tensors: Tensor) -> Tensor:
    """A 0-dim bool tensor on the first tensor's device: whether every element of every tensor is finite. It is
    not read back, so the host does not wait on the device (see `is_finite` for a host answer)."""
    flags = [torch.isfinite(tensor).all().to(tensors[0].device) for tensor in tensors]
    return torch.stack(flags).all()
