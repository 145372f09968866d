"""Magic123's joint prior: the Stable Diffusion guidance (2D, text) and the Zero123 guidance (3D, the photo and the
relative camera) on the same novel-view renders, each with its own weight, scale and schedule.

The defaults are Magic123's coarse stage as threestudio configures it (`configs/magic123-coarse-sd.yaml`): SD scale
100 and Zero123 scale 5, both with t ~ U(0.2, 0.6) and no annealing, loss weights `lambda_sd` 1 and `lambda_3d_sd`
40 against `lambda_rgb` 10000. Our reference colour loss weighs 1000 (`rgb_loss_mult`), so the joint `weight` 0.1
keeps both priors at Magic123's strength relative to the photo. The logs show one loss per prior:
`guidance_sd_sds_loss` and `guidance_zero123_sds_loss` (and the SD option's CLIP losses as `guidance_sd_clip_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Type

from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from single_image_nerf.guidance.base import Guidance, GuidanceConfig, GuidanceContext
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig

MAGIC123_T_RANGE = (0.2, 0.6)
"""Both priors' timestep range in Magic123's coarse stage (min/max_step_percent 0.2/0.6, fixed)."""
ZERO123_FLAG = "pipeline.guidance:magic123 --pipeline.guidance.zero123.model-path"
"""The option that points the joint prior's Zero123 at a local folder (named in its errors)."""
STABLE_DIFFUSION_FLAG = "pipeline.guidance:magic123 --pipeline.guidance.stable-diffusion.model-path"
"""The option that points the joint prior's Stable Diffusion at a local folder (named in its errors)."""


def magic123_stable_diffusion() -> StableDiffusionGuidanceConfig:
    """The 2D prior of Magic123's coarse stage: scale 100, t in [0.2, 0.6] fixed, weight 1 (`lambda_sd`)."""
    return StableDiffusionGuidanceConfig(guidance_scale=100.0, t_range=MAGIC123_T_RANGE, t_range_end=MAGIC123_T_RANGE,
                                         anneal="none", weight=1.0)


def magic123_zero123() -> Zero123GuidanceConfig:
    """The 3D prior of Magic123's coarse stage: scale 5, t in [0.2, 0.6] fixed, weight 40 (`lambda_3d_sd`)."""
    return Zero123GuidanceConfig(guidance_scale=5.0, t_range=MAGIC123_T_RANGE, t_range_end=MAGIC123_T_RANGE,
                                 anneal="none", weight=40.0)


@dataclass
class Magic123GuidanceConfig(GuidanceConfig):
    """Magic123: Stable Diffusion (text) and Zero123 (photo + camera) score distillation together."""

    _target: Type = field(default_factory=lambda: Magic123Guidance)
    weight: float = 0.1
    """Multiplier of both priors' losses: Magic123's lambda_rgb 10000 against our rgb_loss_mult 1000."""
    stable_diffusion: StableDiffusionGuidanceConfig = field(default_factory=magic123_stable_diffusion)
    """The 2D prior (its own weight, scale, schedule and prompt)."""
    zero123: Zero123GuidanceConfig = field(default_factory=magic123_zero123)
    """The 3D prior (its own weight, scale, schedule and model)."""


class Magic123Guidance(Guidance):
    """Both priors on each step's renders; one loss entry per prior."""

    config: Magic123GuidanceConfig

    def __init__(self, config: Magic123GuidanceConfig, context: GuidanceContext) -> None:
        super().__init__(config, context)
        from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidance
        from single_image_nerf.guidance.zero123 import Zero123Guidance

        # Zero123 first: it refuses a run without a reference camera before Stable Diffusion loads.
        self.zero123 = Zero123Guidance(config.zero123, context, model_path_flag=ZERO123_FLAG)
        self.stable_diffusion = StableDiffusionGuidance(config.stable_diffusion, context,
                                                        model_path_flag=STABLE_DIFFUSION_FLAG)
        self.priors: Dict[str, Guidance] = {"sd": self.stable_diffusion, "zero123": self.zero123}

    def loss(self, images: Float[Tensor, "B 3 H W"], cameras: Cameras, step: int) -> Dict[str, Tensor]:
        """Each prior's weighted losses on the same renders, named by prior (sd_*, zero123_*), times `weight`."""
        losses: Dict[str, Tensor] = {}
        for prefix, prior in self.priors.items():
            for name, value in prior.loss(images, cameras, step).items():
                key = name if name.startswith(f"{prefix}_") else f"{prefix}_{name}"
                losses[key] = self.config.weight * value
        return losses

    def status(self, step: int) -> Dict[str, float | Tensor]:
        """Each prior's status, its keys prefixed by the prior (sd_t_max, zero123_sds_grad_norm, ...)."""
        return {f"{prefix}_{name}": value for prefix, prior in self.priors.items()
                for name, value in prior.status(step).items()}
