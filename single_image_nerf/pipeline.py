"""Pipeline: reference losses plus the guidance loss on novel views; the guidance is built only when training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type

import torch

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from single_image_nerf.data.camera_sampling import fov_from_focal, orbit_cameras, pose_angles
from single_image_nerf.data.datamanager import SingleImageDataManager, SingleImageDataManagerConfig
from single_image_nerf.guidance.base import Guidance, GuidanceContext
from single_image_nerf.guidance.registry import AnyGuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.models.coarse_model import CoarseModelConfig

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
    """The prior on novel views: stable-diffusion (score distillation, the default), oracle (a known object, for
    tests) or none (fits the reference view alone)."""


class SingleImagePipeline(VanillaPipeline):
    """VanillaPipeline whose training loss adds the novel-view regularisers and the guidance loss.
    The guidance is kept out of the module tree, so it never reaches a checkpoint."""

    config: SingleImagePipelineConfig
    datamanager: SingleImageDataManager

    def __init__(self, config: SingleImagePipelineConfig, device: str, test_mode: str = "val", **kwargs: Any) -> None:
        super().__init__(config, device, test_mode=test_mode, **kwargs)
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
        """What the guidance may know: the reference view, its camera, the caption and the data folder."""
        outputs = self.datamanager.train_dataparser_outputs
        return GuidanceContext(
            device=torch.device(self.device),
            reference_image=torch.from_numpy(outputs.metadata["rgba"]),
            reference_cameras=outputs.cameras,
            caption=outputs.metadata.get("caption"),
            data_dir=outputs.metadata.get("data_dir"),
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

        cameras = self.datamanager.next_novel_cameras(step)
        size = self.datamanager.config.novel_views.resolution
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
        resolution = self.datamanager.config.novel_views.resolution
        preview = orbit_cameras(azimuth + torch.tensor(NOVEL_PREVIEW_AZIMUTHS), elevation.expand(count),
                                radius.expand(count), fov.expand(count), resolution, resolution).to(self.device)
        for index, offset in enumerate(NOVEL_PREVIEW_AZIMUTHS):
            outputs = self.model.get_outputs_for_camera(preview[index : index + 1])
            images_dict[f"novel_azimuth_{int(offset)}"] = torch.cat([outputs["rgb"], outputs["accumulation"].expand_as(
                outputs["rgb"])], dim=1)
        return metrics_dict, images_dict
