"""The oracle prior: pulls novel-view renders toward a known object's true renders at the same cameras.

It stands in for a diffusion prior that is exactly right, to prove that poses, rays, losses and stages can recover
the unseen sides of an object. The ground truth is composited over `background_color`, which must match the
colour the model composites its novel views over (white for oracle runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from single_image_nerf.guidance.base import Guidance, GuidanceConfig, GuidanceContext
from single_image_nerf.known_objects import KnownObject, composite, get_known_object, render_known_object


@dataclass
class OracleGuidanceConfig(GuidanceConfig):
    """An exact prior for a known object (tests and proofs only)."""

    _target: Type = field(default_factory=lambda: OracleGuidance)
    recipe: ClassVar[str] = "oracle"
    known_object: Optional[str] = None
    """Name of the known object or a mesh file's path (see `get_known_object`); None reads `known_object` from the
    data folder's meta.json."""
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB the ground truth is composited over; must match the model's novel-view background."""
    supersample: int = 2
    """Rays per pixel side when rendering the ground truth (antialiasing)."""


def resolve_known_object(name: Optional[str], context: GuidanceContext) -> KnownObject:
    """The known object named `name`, or the one named in the data folder's meta.json when `name` is None."""
    if name is None:
        meta = context.data_dir / "meta.json" if context.data_dir is not None else None
        if meta is None or not meta.is_file():
            raise ValueError("OracleGuidance needs --known-object or a data folder whose meta.json names one")
        name = json.loads(meta.read_text()).get("known_object")
        if name is None:
            raise ValueError(f"{meta} names no known_object; pass --known-object")
    return get_known_object(name)


def oracle_targets(
    obj: KnownObject, cameras: Cameras, height: int, width: int, background: Tuple[float, float, float], supersample: int
) -> Float[Tensor, "B 3 H W"]:
    """The known object's renders at `cameras`, composited over `background`, at height x width."""
    rgba = render_known_object(obj, cameras, supersample=supersample)["rgba"]
    target = composite(rgba, background).permute(0, 3, 1, 2)
    if target.shape[-2:] != (height, width):
        target = F.interpolate(target, size=(height, width), mode="area")
    return target


class OracleGuidance(Guidance):
    """loss = weight * MSE(renders, known object's renders at the same cameras). Nothing is cached."""

    config: OracleGuidanceConfig

    def __init__(self, config: OracleGuidanceConfig, context: GuidanceContext) -> None:
        super().__init__(config, context)
        self.known_object = resolve_known_object(config.known_object, context)
        self._last_mse: Optional[float] = None

    def loss(self, images: Float[Tensor, "B 3 H W"], cameras: Cameras, step: int) -> Dict[str, Tensor]:
        target = oracle_targets(
            self.known_object, cameras, images.shape[-2], images.shape[-1], self.config.background_color,
            self.config.supersample,
        ).to(device=images.device, dtype=images.dtype)
        mse = F.mse_loss(images, target)
        self._last_mse = float(mse.detach())
        return {"oracle_loss": self.config.weight * mse}

    def status(self, step: int) -> Dict[str, float]:
        if self._last_mse is None or self._last_mse <= 0:
            return {}
        return {"oracle_psnr": float(-10.0 * torch.log10(torch.tensor(self._last_mse)))}
