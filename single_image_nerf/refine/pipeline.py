"""The refine stage's pipeline: the single-image pipeline (reference losses, novel views, guidance) over the refine
datamanager and the Gaussian model, with the data and the seeds taken from the coarse run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Type

import torch

from nerfstudio.utils.rich_utils import CONSOLE

from single_image_nerf.guidance.registry import AnyGuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.pipeline import SingleImagePipeline, SingleImagePipelineConfig
from single_image_nerf.refine.coarse_run import load_coarse_pipeline, read_coarse_config
from single_image_nerf.refine.datamanager import RefineDataManagerConfig
from single_image_nerf.refine.splat_model import RefineSplatModel, RefineSplatModelConfig


REFINE_T_RANGE = (0.02, 0.5)
"""The refine stage's fixed timestep range (fractions of the training timesteps): where the coarse schedule ends,
not where it starts (sources in docs/guidance.md, "Refine stage defaults and their sources")."""
REFINE_GUIDANCE_SCALE = 6.0
"""The refine stage's classifier-free guidance scale: Make-It-3D's refine stage (5 in its eps_cond + s (eps_cond -
eps_uncond), 6 in our eps_uncond + s (eps_cond - eps_uncond))."""


def refine_guidance() -> StableDiffusionGuidanceConfig:
    """Stable Diffusion guidance for the refine stage: small noise only and a low scale, so the prior sharpens the
    seeded texture instead of repainting it."""
    return StableDiffusionGuidanceConfig(t_range=REFINE_T_RANGE, t_range_end=REFINE_T_RANGE, anneal="none",
                                         guidance_scale=REFINE_GUIDANCE_SCALE)


@dataclass
class RefinePipelineConfig(SingleImagePipelineConfig):
    """Refine stage: Gaussians seeded from a coarse run, fitted to the reference view, guided on novel views."""

    _target: Type = field(default_factory=lambda: RefinePipeline)
    datamanager: RefineDataManagerConfig = field(default_factory=RefineDataManagerConfig)
    """The reference camera with its whole image, and novel cameras."""
    model: RefineSplatModelConfig = field(default_factory=RefineSplatModelConfig)
    """The Gaussians."""
    guidance: AnyGuidanceConfig = field(default_factory=refine_guidance)
    """The prior on novel views; by default Stable Diffusion with the refine stage's own schedule (t in [0.02, 0.5],
    scale 6; the coarse stage anneals t from 0.98 at scale 100)."""

    def experiment_name(self) -> Optional[str]:
        """Without --data, the coarse run's experiment name (so the refine run lands beside it); else None."""
        if self.datamanager.data is None and self.model.coarse_config is not None:
            return read_coarse_config(self.model.coarse_config).experiment_name
        return None

    def setup(self, **kwargs) -> Any:
        """Without --data, take the data and its dataparser settings from the coarse run; fit the reference view at
        the photo's own resolution (or the datamanager's reference_size); then build the pipeline."""
        if self.datamanager.data is None:
            coarse = read_coarse_config(self.model.coarse_config)
            self.datamanager.data = coarse.pipeline.datamanager.data
            self.datamanager.dataparser = coarse.pipeline.datamanager.dataparser
        from single_image_nerf.data.reference_image import photo_side

        dataparser = self.datamanager.dataparser
        side = self.datamanager.reference_size or photo_side(self.datamanager.data or dataparser.data)
        if side:
            dataparser.image_size = int(side)
        return super().setup(**kwargs)


class RefinePipeline(SingleImagePipeline):
    """SingleImagePipeline whose model is seeded from the coarse run's field when training. Outside training (viewer,
    exports) the Gaussians come from the checkpoint alone and the coarse run is not loaded."""

    config: RefinePipelineConfig
    model: RefineSplatModel

    def __init__(self, config: RefinePipelineConfig, device: str, test_mode: str = "val", **kwargs: Any) -> None:
        super().__init__(config, device, test_mode=test_mode, **kwargs)
        if test_mode == "val":
            self.seed_from_coarse_run()

    def seed_from_coarse_run(self) -> None:
        """Load the coarse run on the training device, seed the Gaussians from its field, and let it go."""
        model_config = self.config.model
        coarse = load_coarse_pipeline(model_config.coarse_config, self.device, data=self.config.datamanager.data)
        reference = self.datamanager.train_dataset.cameras[0:1]
        seeds = self.model.seed_from_coarse_model(coarse.model, reference)
        del coarse
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()
        CONSOLE.print(f"Seeded {len(seeds)} Gaussians from {model_config.coarse_config} "
                      f"(density level {model_config.seed_density_level}).", soft_wrap=True, highlight=False)
        if seeds.counts:
            counts = seeds.counts
            CONSOLE.print(f"Seeds: {counts['reference']} from the reference view ({int(reference.width)}x"
                          f"{int(reference.height)} px, {counts['foreground_pixels']} foreground pixels, "
                          f"{counts['missed_pixels']} of them missing the coarse surface, {counts['filled_pixels']} "
                          f"of those seeded along their ray), {counts['hidden']} from the coarse "
                          f"field where the reference camera does not see.", soft_wrap=True, highlight=False)
        if model_config.contextual_loss_mult > 0:
            self.model.prepare_contextual_loss()
