"""Pipeline: reference losses plus the guidance loss on novel views; the guidance is built only when training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Tuple, Type

import torch
import tyro

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from single_image_nerf.data.camera_sampling import fov_from_focal, orbit_cameras, pose_angles
from single_image_nerf.data.datamanager import SingleImageDataManager, SingleImageDataManagerConfig
from single_image_nerf.guidance import recipes
from single_image_nerf.guidance.base import Guidance, GuidanceContext, ReferenceViewContext
from single_image_nerf.guidance.registry import AnyGuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.models.coarse_model import CoarseModelConfig
from single_image_nerf.run_length import DEFAULT_RUN_STEPS

NOVEL_PREVIEW_AZIMUTHS = (90.0, 180.0)
"""Azimuths (relative to the reference) of the novel views logged with each evaluation image."""


@dataclass
class SingleImagePipelineConfig(VanillaPipelineConfig):
    """Coarse stage: the model fits the reference view while the guidance shapes the novel views."""

    _target: Type = field(default_factory=lambda: SingleImagePipeline)
    datamanager: SingleImageDataManagerConfig = field(default_factory=SingleImageDataManagerConfig)
    """Reference rays and novel cameras."""
    model: CoarseModelConfig = field(default_factory=CoarseModelConfig)
    """The coarse radiance field."""
    guidance: AnyGuidanceConfig = field(default_factory=StableDiffusionGuidanceConfig)
    """The prior on novel views: stable-diffusion (score distillation, the default), zero123, magic123, oracle (a known
    object, for tests) or none (fits the reference view alone). Its recipe fills every option left unset."""
    run_steps: tyro.conf.Suppress[int] = DEFAULT_RUN_STEPS
    """Steps of the whole run, of which every schedule is a fraction: set from --max-num-iterations when training
    starts."""
    recipe_budget: Optional[Literal["gpu", "cpu"]] = None
    """Which budget of the prior's recipe fills the views per step, render sizes and run length: gpu (the
    reference's) or cpu (one view a step at a small size over a longer run) (None: gpu on CUDA, cpu elsewhere)."""

    stage: ClassVar[str] = "coarse"
    """Which of a prior's recipes (guidance/recipes.py) this stage follows."""
    recipe_options: ClassVar[Mapping[str, str]] = MappingProxyType({
        "novel_fov": "datamanager.novel_views.fov_range",
        "novel_radius": "datamanager.novel_views.radius_range",
        "initial_azimuth_half_width": "datamanager.novel_views.initial_azimuth_half_width",
        "widen_end": "datamanager.novel_views.widen_end",
        "background": "model.background",
        "shading_start": "model.shading_start",
    })
    """The option each of a recipe's settings sets in this stage."""
    budget_options: ClassVar[Mapping[str, str]] = MappingProxyType({
        "views_per_step": "datamanager.novel_views.views_per_step",
        "novel_resolution": "datamanager.novel_views.resolution",
        "stage_starts": "datamanager.novel_views.stage_starts",
    })
    """The option each of a recipe's budget settings sets in this stage (the run length sets --max-num-iterations)."""

    def recipe(self) -> recipes.Recipe:
        """The recipe of this stage's prior."""
        return recipes.recipe_for(self.guidance, self.stage)

    def budget(self, device: Optional[str] = None) -> str:
        """The recipe budget this run follows: `recipe_budget`, else the one of `device` (set once, then kept)."""
        if self.recipe_budget is None:
            self.recipe_budget = recipes.budget_of_device(device or "cpu")
        return self.recipe_budget

    def recipe_run_steps(self, device: Optional[str] = None) -> int:
        """The run's length by the prior's recipe, for the budget of `device` (or `recipe_budget`)."""
        return self.recipe().budget(self.budget(device))["run_steps"].value

    def resolve(self, device: Optional[str] = None) -> Dict[str, Any]:
        """Fill every option left unset (None) from the prior's recipe and its budget for `device` (or
        `recipe_budget`); returns {option path: value} of what was filled. A camera range the recipe fixes at the
        reference camera's takes the dataparser's reference value."""
        self.budget(device)
        self.datamanager.novel_views.normalise()
        recipe = self.recipe()
        filled: Dict[str, Any] = {}
        for path, value in self._recipe_values(recipe):
            owner_path, name = path.rsplit(".", 1)
            owner = _walk(self, owner_path)
            if getattr(owner, name, None) is None:
                setattr(owner, name, value)
                filled[path] = value
        filled.update({f"guidance.{name}": value for name, value in recipes.apply(self.guidance, recipe).items()})
        return filled

    def _recipe_values(self, recipe: recipes.Recipe) -> List[Tuple[str, Any]]:
        """(option path, the recipe's value) of every setting and budget setting this stage takes from `recipe`."""
        values = [(path, self._setting(recipe, concept)) for concept, path in self.recipe_options.items()
                  if concept in recipe.settings]
        budget = recipe.budget(self.budget())
        return values + [(path, budget[concept].value) for concept, path in self.budget_options.items()
                         if concept in budget]

    def _setting(self, recipe: recipes.Recipe, concept: str) -> Any:
        """The recipe's value of a setting, with a range fixed at the reference camera's made concrete."""
        value = recipe.settings[concept].value
        if value == recipes.REFERENCE_CAMERA:
            dataparser = self.datamanager.dataparser
            reference = dataparser.reference_fov if concept == "novel_fov" else dataparser.reference_radius
            value = (float(reference), float(reference))
        return value

    def recipe_summary(self) -> str:
        """One line: the recipe followed and the value of each option it sets, marked where a user's option differs."""
        recipe = self.recipe()
        parts = []
        for path, recipe_value in self._recipe_values(recipe):
            owner_path, name = path.rsplit(".", 1)
            parts.append(_shown(name, getattr(_walk(self, owner_path), name, None), recipe_value))
        for name, sourced in recipe.guidance.items():
            parts.append(_shown(f"guidance.{name}", getattr(self.guidance, name, None), sourced.value))
        for part, values in recipe.parts.items():
            sub = getattr(self.guidance, part, None)
            parts += [_shown(f"guidance.{part}.{name}", getattr(sub, name, None), sourced.value)
                      for name, sourced in values.items()]
        budget = self.budget()
        length = recipe.budget(budget)["run_steps"]
        origin = "--max-num-iterations" if self.run_steps != length.value else (
            f"the recipe's: {length.deviation or length.source}")
        cpu = f" ({recipes.CPU_DEVIATION})" if budget == recipes.CPU_BUDGET else " (the reference's views and sizes)"
        return (f"{self.stage} stage, {recipe.name} recipe, {budget} budget{cpu} (docs/guidance.md; * = your "
                f"option): " + ", ".join(parts) + f"; schedules over {self.run_steps} steps ({origin})")


def _walk(config: Any, path: str) -> Any:
    for name in path.split(".") if path else ():
        config = getattr(config, name)
    return config


def _shown(name: str, value: Any, recipe_value: Any) -> str:
    text = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none" if isinstance(
        value, tuple) else (
        f"{value:g}" if isinstance(value, float) else str(value))
    return f"{name} {text}{'' if value == recipe_value else '*'}"


class SingleImagePipeline(VanillaPipeline):
    """VanillaPipeline whose training loss adds the novel-view regularisers and the guidance loss.
    The guidance is kept out of the module tree, so it never reaches a checkpoint."""

    config: SingleImagePipelineConfig
    datamanager: SingleImageDataManager

    def __init__(self, config: SingleImagePipelineConfig, device: str, test_mode: str = "val", **kwargs: Any) -> None:
        config.resolve(device)  # options nobody set, also those of a config.yml written before they existed
        super().__init__(config, device, test_mode=test_mode, **kwargs)
        self.datamanager.run_steps = config.run_steps
        self.model.run_steps = config.run_steps
        self.model.reference_view_count = self.datamanager.reference_view_count
        guidance: Optional[Guidance] = None
        if test_mode == "val":
            guidance = config.guidance.setup(context=self.guidance_context())
        object.__setattr__(self, "_guidance", guidance)
        self.skipped_steps = 0
        """Steps skipped for a non-finite loss (counted when the optimizers' guard reports the skip) or gradient."""
        self._skip_flag: Any = False
        self._loss_check: Optional[Tuple[List[str], torch.Tensor, int]] = None
        self.last_novel_views = None

    @property
    def guidance(self) -> Optional[Guidance]:
        """The guidance, or None outside training."""
        return self._guidance

    def guidance_context(self) -> GuidanceContext:
        """What the guidance may know: the reference view (at the training size and at the photo's own), its camera,
        every reference view of several photos (each cut alike, at both sizes, with its camera), the caption, the
        data folder and the run's length."""
        from single_image_nerf.data.reference_image import photo_side, read_reference
        from single_image_nerf.data.reference_views import read_reference_views, view_entries

        outputs = self.datamanager.train_dataparser_outputs
        dataparser = self.datamanager.config.dataparser
        data = Path(self.datamanager.config.data or dataparser.data)
        side = max(photo_side(data) or 0, dataparser.image_size)
        views = outputs.metadata.get("reference_views") or []
        reference_views: Tuple[ReferenceViewContext, ...] = ()
        if views:  # the main photo is cut by the views' common window, as the training reference is
            photos = [view.rgba for view in read_reference_views(view_entries(data), side, dataparser.border,
                                                                 dataparser.recenter)]
            reference_views = tuple(
                ReferenceViewContext(image=torch.from_numpy(view["rgba"]), camera=view["camera"],
                                     photo=torch.from_numpy(photo)) for view, photo in zip(views, photos))
            photo = photos[0]
        else:
            photo = read_reference(data, side, dataparser.border, dataparser.recenter).rgba
        return GuidanceContext(
            device=torch.device(self.device),
            reference_image=torch.from_numpy(outputs.metadata["rgba"]),
            reference_cameras=outputs.cameras,
            caption=outputs.metadata.get("caption"),
            data_dir=outputs.metadata.get("data_dir"),
            reference_photo=torch.from_numpy(photo),
            run_steps=self.config.run_steps,
            reference_views=reference_views,
        )

    @property
    def skip_optimizer_step(self) -> Any:
        """Whether the optimizers must leave the weights alone this step because a loss was not finite.

        After `get_train_loss_dict` this is a 0-dim bool tensor on the model's device, never read here: the
        optimizers' guard reads it (with its own checks, in its one wait on the device per step). A guard that finds
        it true assigns False, which counts the skipped step and prints the names of the non-finite losses (one more
        read, on that step only); assigning False without having read it true costs that read on every step."""
        return self._skip_flag

    @skip_optimizer_step.setter
    def skip_optimizer_step(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            self._skip_flag = value
            return
        check, self._loss_check, self._skip_flag = self._loss_check, None, bool(value)
        if value or check is None:
            return
        names, finite, step = check
        bad = [name for name, ok in zip(names, finite.tolist()) if not ok]
        if bad:
            self.skipped_steps += 1
            CONSOLE.print(f"[bold yellow]step {step}: non-finite {', '.join(bad)}; this step is skipped")

    def get_train_loss_dict(self, step: int):
        ray_bundle, batch = self.datamanager.next_train(step)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)

        cameras = self.datamanager.next_novel_cameras(step)  # every view of the step: one render, one prior call
        _, size = self.datamanager.novel_view_stage(step)
        views = self.model.render_views(cameras, image_size=(size, size))
        self.last_novel_views = (step, cameras, views["rgb"].detach())  # shown by the viewer
        loss_dict.update(self.model.get_novel_view_loss_dict(views))
        if self.guidance is not None:
            for name, value in self.guidance.loss(views["rgb"], cameras, step).items():
                loss_dict[f"guidance_{name}"] = value
            # Tensors (or numbers), read only where the metrics are logged.
            metrics_dict.update({f"guidance_{k}": torch.as_tensor(v) for k, v in self.guidance.status(step).items()})
        return model_outputs, self._guard_finite(loss_dict, step), metrics_dict

    def _guard_finite(self, loss_dict: Dict[str, torch.Tensor], step: int) -> Dict[str, torch.Tensor]:
        """A non-finite loss would write NaN into the field: one stacked check on the device zeroes every loss of
        such a step and sets `skip_optimizer_step` (a device flag) for the optimizers' guard. Nothing is read here."""
        if not loss_dict:
            return loss_dict
        names = list(loss_dict)
        finite = torch.stack([torch.isfinite(value.detach()).all() for value in loss_dict.values()])
        ok = finite.all()
        self._loss_check = (names, finite, step)
        self.skip_optimizer_step = ~ok
        return {name: torch.where(ok, value, torch.zeros_like(value)) for name, value in loss_dict.items()}

    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int):
        metrics_dict, images_dict = super().get_eval_image_metrics_and_images(step)
        reference = self.datamanager.train_dataparser_outputs.cameras
        azimuth, elevation, radius = pose_angles(reference.camera_to_worlds)
        fov = fov_from_focal(reference.fy[:, 0], int(reference.height[0]))
        count = len(NOVEL_PREVIEW_AZIMUTHS)
        _, resolution = self.datamanager.novel_view_stage(step)
        preview = orbit_cameras(azimuth + torch.tensor(NOVEL_PREVIEW_AZIMUTHS), elevation.expand(count),
                                radius.expand(count), fov.expand(count), resolution, resolution).to(self.device)
        for index, offset in enumerate(NOVEL_PREVIEW_AZIMUTHS):
            outputs = self.model.get_outputs_for_camera(preview[index : index + 1])
            images_dict[f"novel_azimuth_{int(offset)}"] = torch.cat([outputs["rgb"], outputs["accumulation"].expand_as(
                outputs["rgb"])], dim=1)
        return metrics_dict, images_dict
