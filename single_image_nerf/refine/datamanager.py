"""The refine stage's datamanager: the single-image datamanager whose reference batch is a whole reference image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras

from single_image_nerf.data.datamanager import NovelViewConfig, SingleImageDataManager, SingleImageDataManagerConfig


@dataclass
class RefineDataManagerConfig(SingleImageDataManagerConfig):
    """Reference camera with its whole image (for a rasteriser), novel cameras from the curriculum."""

    _target: Type = field(default_factory=lambda: RefineDataManager)
    novel_views: NovelViewConfig = field(
        default_factory=lambda: NovelViewConfig(views_per_step=(1,), resolution=(128,), stage_starts=(),
                                                initial_azimuth_half_width=180.0, widen_end=0.0)
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
        """A reference camera (1 camera) and its data: "image" (H, W, 4) RGBA and, when the data has depth, "depth"
        (H, W, 1), left on the CPU: the model reads the image size there for free and copies what it renders from
        to its device without waiting. With several photos, the reference views take turns, main first, one a step
        (as splatfacto takes one training image a step). Outside training, the single-image datamanager's
        behaviour."""
        if self.test_mode != "val":
            return super().next_train(step)
        self.train_count += 1
        views = self.reference_views
        if not views:
            return self.train_dataset.cameras[0:1], self.train_dataset[0]
        view = views[(self.train_count - 1) % len(views)]
        batch = {"image": torch.as_tensor(view["rgba"], dtype=torch.float32)}
        if view.get("depth") is not None:
            batch["depth"] = torch.as_tensor(view["depth"], dtype=torch.float32)[..., None]
        return view["camera"], batch

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        """As `next_train`, from the evaluation dataset (the same single view)."""
        self.eval_count += 1
        return self.eval_dataset.cameras[0:1].to(self.device), self.eval_dataset[0]
