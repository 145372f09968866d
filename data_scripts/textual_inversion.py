#!/usr/bin/env python
"""Learn a token for the object of a preprocessed image (RealFusion's textual inversion) and save it beside the data,
where the stable-diffusion guidance finds it (token.bin, token.json).

    python data_scripts/textual_inversion.py --data data/coffee --steps 3000
    ns-train single-image-nerf --data data/coffee   # prompts "a photo of <object>, front view", ...
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

try:
    from single_image_nerf.guidance.textual_inversion import TextualInversionConfig
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from single_image_nerf.guidance.textual_inversion import TextualInversionConfig


@dataclass
class TextualInversionCommand(TextualInversionConfig):
    """Learn the object's token from the reference image and save it beside the data."""

    data: Path = Path("data")
    """Preprocessed data folder (holding rgba.png) or an RGBA image."""
    output: Optional[Path] = None
    """Folder to write token.bin into; None: the data folder (the image's folder for an image)."""
    device: Optional[str] = None
    """Torch device; None: the GPU when there is one, else the CPU (slow: minutes per step with real weights)."""


def check_inputs(command: TextualInversionCommand) -> None:
    """Options and the reference image, with one line each, before any weights are loaded."""
    from single_image_nerf.inputs import check_data, check_numbers

    check_numbers(command)
    check_data(command.data)


def main(argv: Optional[List[str]] = None) -> Path:
    """Parse the command line, learn the token, print and return where it was saved."""
    import tyro

    from single_image_nerf.guidance.textual_inversion import textual_inversion
    from single_image_nerf.preprocess.devices import resolve_device

    command = tyro.cli(TextualInversionCommand, args=argv)
    check_inputs(command)
    path = textual_inversion(command.data, command, device=resolve_device(command.device), output=command.output)
    print(f"saved {command.token} to {path}")
    return path


if __name__ == "__main__":
    main()
