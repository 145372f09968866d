"""Every guidance selectable from the command line, as one tyro union (`pipeline.guidance:<name>`)."""

from __future__ import annotations

from typing import Union

import tyro
from typing_extensions import Annotated

from single_image_nerf.guidance.base import NoGuidanceConfig
from single_image_nerf.guidance.magic123 import Magic123GuidanceConfig
from single_image_nerf.guidance.oracle import OracleGuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig

AnyGuidanceConfig = Union[
    Annotated[NoGuidanceConfig, tyro.conf.subcommand("none")],
    Annotated[OracleGuidanceConfig, tyro.conf.subcommand("oracle")],
    Annotated[StableDiffusionGuidanceConfig, tyro.conf.subcommand("stable-diffusion")],
    Annotated[Zero123GuidanceConfig, tyro.conf.subcommand("zero123")],
    Annotated[Magic123GuidanceConfig, tyro.conf.subcommand("magic123")],
]
"""Add a guidance here with its subcommand name; the pipeline config's `guidance` field takes this union."""
