"""What every score-distillation prior shares: the timestep schedule and weighting options, the encoder choice, the
noise schedule read from the model's scheduler, the seeded generators, and the count of skipped steps kept on the
device. Stable Diffusion and Zero123 build on it; the formulas themselves are in `sds.py`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import Guidance, GuidanceConfig, GuidanceContext
from single_image_nerf.run_length import step_at


@dataclass
class ScoreTrace:
    """What one score evaluation used and produced (for the loss, the CLIP option, logging and tests)."""

    t: Tensor
    """Integer timesteps, one per view."""
    noise: Tensor
    """The noise eps added to the latents."""
    noisy: Tensor
    """z_t."""
    eps_hat: Tensor
    """Guided noise prediction."""
    grad: Tensor
    """w(t)(eps_hat - eps), clipped if configured: the gradient the loss puts on the latents (times 1/B)."""


@dataclass
class ScoreDistillationConfig(GuidanceConfig):
    """Options every score-distillation prior has; those left None come from the prior's recipe (guidance/recipes.py)."""

    guidance_scale: Optional[float] = None
    """Classifier-free guidance scale s in eps_uncond + s (eps_cond - eps_uncond) (None: the prior's recipe)."""
    t_range: Optional[Tuple[float, float]] = None
    """(t_min, t_max) as fractions of the training timesteps at the start (None: the prior's recipe)."""
    t_range_end: Optional[Tuple[float, float]] = None
    """(t_min, t_max) once annealed (None: the prior's recipe)."""
    anneal: Optional[sds.AnnealKind] = None
    """How the range moves from `t_range` to `t_range_end`: none, linear, sqrt (HiFA) or step (ProlificDreamer)
    (None: the prior's recipe)."""
    anneal_start: Optional[float] = None
    """Fraction of the run at which the annealing starts (None: the prior's recipe)."""
    anneal_end: Optional[float] = None
    """Fraction of the run at which the annealing ends (None: the prior's recipe)."""
    weighting: sds.Weighting = "sds"
    """w(t): sds = 1 - abar_t (DreamFusion), sqrt = sqrt(1 - abar_t), uniform = 1, fantasia3d = sqrt(abar_t)(1 - abar_t)."""
    grad_clip: Optional[float] = None
    """Clamp each element of w(t)(eps_hat - eps) to [-grad_clip, grad_clip]; None: no clipping."""
    encoder: Literal["auto", "vae", "latent"] = "auto"
    """How renders become latents: vae (encoder at the native size), latent (resize to the latent grid and map colours
    affinely, no encoder), auto (vae on CUDA, latent elsewhere; see docs/guidance.md for the measurements)."""
    resolution: Optional[int] = None
    """Image side in pixels the latents stand for (latent side = resolution / 8); None: the model's native size."""
    seed: int = 0
    """Seed of the timesteps and the noise."""


def choose_encoder(encoder: str, device: torch.device) -> str:
    """The encoding for `device`: "auto" is "vae" on CUDA and "latent" elsewhere."""
    if encoder == "auto":
        return "vae" if device.type == "cuda" else "latent"
    if encoder not in ("vae", "latent"):
        raise UserInputError(f"unknown encoder {encoder!r}: use auto, vae or latent")
    return encoder


class ScoreDistillationGuidance(Guidance):
    """The shared state of a score-distillation prior; subclasses load their model and call `use_noise_schedule`."""

    config: ScoreDistillationConfig
    name = "score-distillation"
    """How warnings name the prior."""

    def __init__(self, config: ScoreDistillationConfig, context: GuidanceContext) -> None:
        super().__init__(config, context)
        self.device = torch.device(context.device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.t_generator = torch.Generator().manual_seed(config.seed)
        self.noise_generator = torch.Generator().manual_seed(config.seed + 1)
        self._skipped = torch.zeros((), dtype=torch.long, device=self.device)
        self._skipped_reported = 0
        self.last_trace: Optional[ScoreTrace] = None

    def use_noise_schedule(self, scheduler) -> None:
        """Take the training timesteps, prediction type and cumulative alphas of the model's scheduler."""
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = str(scheduler.config.prediction_type)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)

    def use_encoder(self, vae) -> None:
        """Choose how renders become latents, fitting the affine latent map when it is used."""
        from single_image_nerf.guidance.latents import fit_linear_latent_map

        self.encoder = choose_encoder(self.config.encoder, self.device)
        self.latent_map = fit_linear_latent_map(vae, self.device) if self.encoder == "latent" else None

    def timestep_range(self, step: int) -> Tuple[float, float]:
        """(t_min, t_max) as fractions at `step`: the annealing runs from `anneal_start` to `anneal_end` of the run."""
        c = self.config
        start, end = (step_at(fraction, self.context.run_steps) for fraction in (c.anneal_start, c.anneal_end))
        return sds.timestep_range(step, c.t_range, c.t_range_end, c.anneal, start, max(end - start, 0))

    def count_skipped(self, ok: Tensor) -> None:
        """Add a step whose score was not finite (`ok` false) to the count, on the device."""
        self._skipped = self._skipped + (~ok).long()

    @property
    def skipped_steps(self) -> int:
        """Steps whose SDS was skipped for a non-finite score (read back from the device: call it when logging).
        Warns once for the steps skipped since the last read."""
        skipped = int(self._skipped)
        if skipped > self._skipped_reported:
            warnings.warn(f"{self.name} guidance: non-finite score in {skipped - self._skipped_reported} step(s) "
                          "since the last report; their SDS was skipped", RuntimeWarning, stacklevel=2)
            self._skipped_reported = skipped
        return skipped

    def status(self, step: int) -> Dict[str, float | Tensor]:
        """The timestep range (numbers), the count of skipped steps and the last SDS gradient's norm (tensors on the
        device, not read here: whoever logs them reads them)."""
        t_min, t_max = self.timestep_range(step)
        status: Dict[str, float | Tensor] = {"t_min": t_min, "t_max": t_max, "skipped_steps": self._skipped.float()}
        if self.last_trace is not None:
            status["sds_grad_norm"] = self.last_trace.grad.norm()
        return status
