"""The refine stage's pipeline: the single-image pipeline (reference losses, novel views, guidance) over the refine
datamanager and the Gaussian model, with the data and the seeds taken from the coarse run."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Dict, Mapping, Optional, Type, Union

import torch
import tyro
from typing_extensions import Annotated

from nerfstudio.utils.rich_utils import CONSOLE

from single_image_nerf.guidance import recipes
from single_image_nerf.guidance.base import GuidanceConfig
from single_image_nerf.guidance.registry import AnyGuidanceConfig
from single_image_nerf.pipeline import SingleImagePipeline, SingleImagePipelineConfig
from single_image_nerf.refine.coarse_run import load_coarse_pipeline, read_coarse_config
from single_image_nerf.refine.datamanager import RefineDataManagerConfig
from single_image_nerf.refine.splat_model import RefineSplatModel, RefineSplatModelConfig
from single_image_nerf.run_length import DEFAULT_REFINE_STEPS


@dataclass
class CoarsePriorConfig(GuidanceConfig):
    """The coarse run's prior with the refine stage's recipe (`pipeline.guidance:coarse`, the refine default): a
    zero123 coarse run refines with Zero123, a stable-diffusion one with Stable Diffusion and its prompt. Replaced by
    that prior's config when the refine pipeline resolves its options."""


def follow_coarse_prior(coarse_guidance: GuidanceConfig) -> GuidanceConfig:
    """A copy of the coarse run's guidance config with its model, prompt and other own options, and every option a
    recipe sets unset again, so that the refine stage's recipe fills them."""
    guidance = copy.deepcopy(coarse_guidance)
    recipe = recipes.recipe_for(guidance, "refine")
    for name in recipe.guidance:
        if hasattr(guidance, name):
            setattr(guidance, name, None)
    for part, values in recipe.parts.items():
        for name in values:
            setattr(getattr(guidance, part), name, None)
    return guidance


RefineGuidanceConfig = Union[Annotated[CoarsePriorConfig, tyro.conf.subcommand("coarse")], AnyGuidanceConfig]
"""The refine stage's priors: the coarse run's (the default), or any prior by name."""


@dataclass
class RefinePipelineConfig(SingleImagePipelineConfig):
    """Refine stage: Gaussians seeded from a coarse run, fitted to the reference view, guided on novel views."""

    _target: Type = field(default_factory=lambda: RefinePipeline)
    datamanager: RefineDataManagerConfig = field(default_factory=RefineDataManagerConfig)
    """The reference camera with its whole image, and novel cameras."""
    model: RefineSplatModelConfig = field(default_factory=RefineSplatModelConfig)
    """The Gaussians."""
    guidance: RefineGuidanceConfig = field(default_factory=CoarsePriorConfig)
    """The prior on novel views: by default the coarse run's (coarse), with the refine stage's recipe (threestudio's
    Magic123 refine stage: t in [0.2, 0.6], Stable Diffusion at scale 100 and weight 0.025, Zero123 at scale 5);
    or any prior by name."""
    run_steps: tyro.conf.Suppress[int] = DEFAULT_REFINE_STEPS
    """Steps of the whole run, of which every schedule is a fraction: set from --max-num-iterations when training
    starts."""

    stage: ClassVar[str] = "refine"
    recipe_options: ClassVar[Mapping[str, str]] = MappingProxyType({
        "novel_fov": "datamanager.novel_views.fov_range",
        "novel_radius": "datamanager.novel_views.radius_range",
        "background": "model.background_color",
    })
    """The refine stage takes the cameras and the background of its prior's recipe; its novel views are drawn at 128
    px over the full circle from the start (RefineDataManagerConfig), and Gaussians are not shaded."""
    budget_options: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Of a recipe's budget, the refine stage takes only the run length (its views are the refine datamanager's)."""

    def experiment_name(self) -> Optional[str]:
        """Without --data, the coarse run's experiment name (so the refine run lands beside it); else None."""
        if self.datamanager.data is None and self.model.coarse_config is not None:
            return read_coarse_config(self.model.coarse_config).experiment_name
        return None

    def resolve(self, device: Optional[str] = None) -> Dict[str, Any]:
        """Without --data, take the data and its dataparser settings from the coarse run; with the default prior
        (coarse), take the coarse run's prior; then fill the options left unset from the refine recipe."""
        coarse = None
        if self.datamanager.data is None:
            coarse = read_coarse_config(self.model.coarse_config)
            self.datamanager.data = coarse.pipeline.datamanager.data
            self.datamanager.dataparser = coarse.pipeline.datamanager.dataparser
        if isinstance(self.guidance, CoarsePriorConfig):
            coarse = coarse or read_coarse_config(self.model.coarse_config)
            self.guidance = follow_coarse_prior(coarse.pipeline.guidance)
        return super().resolve(device)

    def setup(self, **kwargs) -> Any:
        """Resolve (above); fit the reference view at the photo's own resolution (or the datamanager's
        reference_size); then build the pipeline."""
        self.resolve(kwargs.get("device"))
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
            photos = self.datamanager.reference_view_count
            source = "the reference view" if photos == 1 else f"the {photos} reference views"
            overlap = f", {counts['overlap_pixels']} left to a view facing their surface more squarely" \
                if photos > 1 else ""
            CONSOLE.print(f"Seeds: {counts['reference']} from {source} ({int(reference.width)}x"
                          f"{int(reference.height)} px, {counts['foreground_pixels']} foreground pixels, "
                          f"{counts['missed_pixels']} of them missing the coarse surface, {counts['filled_pixels']} "
                          f"of those seeded along their ray{overlap}), {counts['hidden']} from the coarse "
                          f"field where no reference camera sees.", soft_wrap=True, highlight=False)
        if model_config.contextual_loss_mult > 0:
            self.model.prepare_contextual_loss()
