"""Magic123's joint prior: the Stable Diffusion guidance (2D, text) and the Zero123 guidance (3D, the photo and the
relative camera) on the same novel-view renders, each with its own weight, scale and schedule.

The values left unset come from the magic123 recipe (guidance/recipes.py): threestudio's current
`configs/magic123-coarse-sd.yaml`, SD scale 100 and Zero123 scale 5, both with t ~ U(0.2, 0.6) and no annealing, loss
weights `lambda_sd` 0.025 and `lambda_3d_sd` 1 against `lambda_rgb` 1000, which is our `rgb_loss_mult`, so the joint
`weight` is 1. (The Magic123 authors' own scripts weigh 1 and 40 against `lambda_rgb` 5.) The logs show one loss per
prior: `guidance_sd_sds_loss` and `guidance_zero123_sds_loss` (and the SD option's CLIP losses as `guidance_sd_clip_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Type

from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from single_image_nerf.guidance.base import Guidance, GuidanceConfig, GuidanceContext
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig

ZERO123_FLAG = "pipeline.guidance:magic123 --pipeline.guidance.zero123.model-path"
"""The option that points the joint prior's Zero123 at a local folder (named in its errors)."""
STABLE_DIFFUSION_FLAG = "pipeline.guidance:magic123 --pipeline.guidance.stable-diffusion.model-path"
"""The option that points the joint prior's Stable Diffusion at a local folder (named in its errors)."""


@dataclass
class Magic123GuidanceConfig(GuidanceConfig):
    """Magic123: Stable Diffusion (text) and Zero123 (photo + camera) score distillation together."""

    _target: Type = field(default_factory=lambda: Magic123Guidance)
    stable_diffusion: StableDiffusionGuidanceConfig = field(default_factory=StableDiffusionGuidanceConfig)
    """The 2D prior (its own weight, scale, schedule and prompt; unset ones from the magic123 recipe)."""
    zero123: Zero123GuidanceConfig = field(default_factory=Zero123GuidanceConfig)
    """The 3D prior (its own weight, scale, schedule and model; unset ones from the magic123 recipe)."""
    recipe: ClassVar[str] = "magic123"


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
