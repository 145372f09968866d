"""The guidance interface: a frozen prior that scores novel-view renders.

A guidance lives outside the Model (never in a checkpoint) and is built only when training. It sees the novel-view
renders and the cameras they came from, nothing else: anything view-dependent reads it from `cameras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.base_config import InstantiateConfig

from single_image_nerf.run_length import DEFAULT_RUN_STEPS


@dataclass(frozen=True)
class ReferenceViewContext:
    """One reference view of a several-photo folder, as a guidance may read it."""

    image: Float[Tensor, "H W 4"]
    """The view as RGBA in [0, 1] at the training size (alpha is the foreground mask)."""
    camera: Cameras
    """The view's single camera."""
    photo: Optional[Float[Tensor, "H W 4"]] = None
    """The view cut alike at the preprocessed photo's own size (None: use image)."""


@dataclass
class GuidanceContext:
    """What a guidance may know about the scene besides the renders: built by the pipeline from the data."""

    device: torch.device
    """Device the renders live on; the guidance may keep its own weights elsewhere."""
    reference_image: Optional[Float[Tensor, "H W 4"]] = None
    """The reference view as RGBA in [0, 1] (alpha is the foreground mask)."""
    reference_cameras: Optional[Cameras] = None
    """The single reference camera."""
    caption: Optional[str] = None
    """Caption found beside the data (caption.txt), if any."""
    data_dir: Optional[Path] = None
    """Folder of the preprocessed data (where a learned token may be saved), if the data is a folder."""
    reference_photo: Optional[Float[Tensor, "H W 4"]] = None
    """The reference view as the reference image, recentred the same way, at the preprocessed photo's own size
    (a conditioning image for priors that read the photo at their own resolution); None: use reference_image."""
    run_steps: int = DEFAULT_RUN_STEPS
    """Steps of the whole run: schedules given as fractions of the run are fractions of this."""
    reference_views: Tuple[ReferenceViewContext, ...] = ()
    """Every reference view of a several-photo folder, main first (its image and camera those above); empty for one
    photo."""


@dataclass
class GuidanceConfig(InstantiateConfig):
    """Base configuration of a guidance; `none` when used as is."""

    _target: Type = field(default_factory=lambda: Guidance)
    weight: Optional[float] = None
    """Multiplier of the guidance loss (None: the prior's recipe, guidance/recipes.py)."""
    recipe: ClassVar[str] = "none"
    """The name of this prior's recipe in guidance/recipes.py."""

    def recipe_name(self) -> str:
        """The recipe this configuration follows."""
        return self.recipe


@dataclass
class NoGuidanceConfig(GuidanceConfig):
    """No prior: the novel views get only the model's regularisers (`pipeline.guidance:none`).

    A class of its own, so that command-line selection never mistakes another guidance for it."""


class Guidance:
    """A frozen prior over novel views. The base class is the `none` guidance: it contributes no loss."""

    config: GuidanceConfig

    def __init__(self, config: GuidanceConfig, context: GuidanceContext) -> None:
        from single_image_nerf.guidance import recipes

        recipes.apply(config, recipes.recipe_for(config))  # options nobody set (a guidance built on its own)
        self.config = config
        self.context = context

    def loss(self, images: Float[Tensor, "B 3 H W"], cameras: Cameras, step: int) -> Dict[str, Tensor]:
        """Weighted losses on novel-view renders in [0, 1] (background composited) from `cameras` at `step`."""
        return {}

    def status(self, step: int) -> Dict[str, float]:
        """Scalars worth showing while training (for example the current timestep range)."""
        return {}
