"""The refine stage's datamanager: the single-image datamanager whose reference batch is the whole reference image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple, Type

from nerfstudio.cameras.cameras import Cameras

from single_image_nerf.data.datamanager import NovelViewConfig, SingleImageDataManager, SingleImageDataManagerConfig


@dataclass
class RefineDataManagerConfig(SingleImageDataManagerConfig):
    """Reference camera with its whole image (for a rasteriser), novel cameras from the curriculum."""

    _target: Type = field(default_factory=lambda: RefineDataManager)
    novel_views: NovelViewConfig = field(
        default_factory=lambda: NovelViewConfig(resolution=128, initial_azimuth_half_width=180.0, widen_end=0.0)
    )
    """How novel cameras are drawn (the coarse stage already shaped every side: the full circle from the start; the
    field of view and distance follow the prior's recipe)."""
    reference_size: int = 0
    """Side in pixels of the reference image fitted in this stage (0: the photo's own, the side of the preprocessed
    rgba.png, rather than the coarse stage's smaller one)."""


class RefineDataManager(SingleImageDataManager):
    """SingleImageDataManager that, when training, yields the reference camera and its whole image (colour, alpha,
    depth) instead of sampled rays: Gaussians are rasterised image by image."""

    config: RefineDataManagerConfig

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """The reference camera (1 camera) and its data: "image" (H, W, 4) RGBA and, when the data has depth, "depth"
        (H, W, 1), left on the CPU: the model reads the image size there for free and copies what it renders from
        to its device without waiting. Outside training, the single-image datamanager's behaviour."""
        if self.test_mode != "val":
            return super().next_train(step)
        self.train_count += 1
        return self.train_dataset.cameras[0:1], self.train_dataset[0]

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        """As `next_train`, from the evaluation dataset (the same single view)."""
        self.eval_count += 1
        return self.eval_dataset.cameras[0:1].to(self.device), self.eval_dataset[0]
