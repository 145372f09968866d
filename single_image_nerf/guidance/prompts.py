"""Prompts: where the prompt comes from, and the view-dependent suffix (DreamFusion) chosen for each camera.

Views are named from each camera's azimuth relative to the reference view (read from `cameras.metadata
["reference_azimuth"]`, 0 when absent) and its elevation, both derived from the camera-to-world matrices with
`pose_angles`: overhead above `overhead_threshold` degrees of elevation, else front within `front_threshold` degrees
of the reference azimuth, back within `back_threshold` degrees of the opposite azimuth, and side otherwise.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from single_image_nerf.data.camera_sampling import pose_angles, wrap_degrees
from single_image_nerf.errors import UserInputError

VIEWS = ("front", "side", "back", "overhead")
"""View names, in the order of the indices that `view_indices` returns."""


class PromptMissingError(UserInputError):
    """No prompt was given, no learned token was found and the data has no caption.txt."""


def relative_view_angles(cameras) -> Tuple[Tensor, Tensor]:
    """(azimuth relative to the reference azimuth in [-180, 180), elevation) in degrees, one per camera."""
    azimuth, elevation, _ = pose_angles(cameras.camera_to_worlds)
    metadata = cameras.metadata or {}
    reference = metadata.get("reference_azimuth")
    if reference is not None:
        azimuth = azimuth - reference.reshape(-1).to(azimuth)
    return wrap_degrees(azimuth.reshape(-1)), elevation.reshape(-1)


def view_indices(
    relative_azimuth: Tensor,
    elevation: Tensor,
    front_threshold: float = 45.0,
    back_threshold: float = 45.0,
    overhead_threshold: float = 60.0,
) -> Tensor:
    """Index into `VIEWS` for each view (thresholds in degrees, as threestudio's prompt processor)."""
    azimuth = wrap_degrees(relative_azimuth).abs()
    index = torch.full_like(azimuth, VIEWS.index("side"), dtype=torch.long)
    # torch.where rather than masked assignment: a mask index makes the host wait on a CUDA device.
    index = torch.where(azimuth <= front_threshold, VIEWS.index("front"), index)
    index = torch.where(azimuth >= 180.0 - back_threshold, VIEWS.index("back"), index)
    return torch.where(elevation > overhead_threshold, VIEWS.index("overhead"), index)


def resolve_prompt(
    user_prompt: Optional[str], caption: Optional[str], token: Optional[str], token_template: str
) -> str:
    """The base prompt: the user's, else the learned token in `token_template`, else the caption, else an error."""
    if user_prompt:
        return user_prompt
    if token:
        return token_template.format(token=token, caption=caption or "").strip(" ,")
    if caption and caption.strip():
        return caption.strip()
    raise PromptMissingError(
        "the stable-diffusion guidance needs a prompt: pass pipeline.guidance:stable-diffusion "
        "--pipeline.guidance.prompt 'a photo of ...', or "
        "preprocess the image (data_scripts/preprocess_image.py writes caption.txt), or learn a token with "
        "data_scripts/textual_inversion.py"
    )
