"""Load a guidance's frozen components from a local folder found (or downloaded) by `single_image_nerf.pretrained`.

`from_pretrained` on a hub id without network retries for minutes (transformers) or, for some tokenizers, quietly
builds an empty one; so the folder is resolved first (cache, then download), and every component is then loaded from
that local folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from single_image_nerf.pretrained import (ModelUnavailableError, half_variant, resolve_hub_model, resolve_hub_weights,
                                         weights_variant)

GuidanceUnavailableError = ModelUnavailableError
"""A guidance's weights cannot be found: the message names the model and how to give a local folder."""


def load_component(loader, folder: Path, model: str, flag: str, **kwargs):
    """`loader(folder, **kwargs)` (a `from_pretrained`), with any failure turned into one line naming `model`."""
    try:
        return loader(str(folder), **kwargs)
    except Exception as error:
        part = kwargs.get("subfolder", "")
        raise GuidanceUnavailableError(
            f"cannot load '{model}'{f' ({part})' if part else ''} from {folder}: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}; pass a complete local folder with {flag} /path/to/folder"
        ) from None


SD_SUBFOLDERS = ("unet", "vae", "text_encoder")
"""The components with weights that a guidance loads (never the safety checker)."""
SD_REQUIRED = (
    "unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)
"""Files a diffusers Stable Diffusion folder must hold for the guidance."""
@dataclass
class DiffusionParts:
    """The frozen components every latent diffusion prior has (fp32 weights loaded, then cast to the run's dtype)."""

    unet: Any
    vae: Any
    scheduler: Any
    folder: Path

    @property
    def vae_scale_factor(self) -> int:
        """How many pixels one latent covers along a side (8 for SD 1.x/2.x and Zero123)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """Side in pixels of the images the UNet was trained on (512 for SD 2.1-base, 256 for Zero123)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


@dataclass
class StableDiffusionParts(DiffusionParts):
    """The frozen components of a Stable Diffusion checkpoint."""

    tokenizer: Any = None
    text_encoder: Any = None


def freeze(module):
    """Evaluation mode and no parameter gradients: the guidance's weights never change and never get a .grad."""
    module.eval()
    module.requires_grad_(False)
    return module


def stable_diffusion_folder(model: str, flag: str) -> Path:
    """The local folder of `model` (hub id or folder) with the configs and tokenizer the guidance needs (its weights
    come with `load_stable_diffusion`, in the run's precision); one line if there is none."""
    return resolve_hub_model(model, "Stable Diffusion prior", flag, ("*.json", "*.txt"), SD_REQUIRED)


def vae_scale_factor_of(folder: Path) -> Optional[int]:
    """Pixels per latent along a side, read from the folder's vae/config.json before any weight is loaded (None when
    the file cannot be read: the caller checks again once the VAE is loaded)."""
    try:
        blocks = json.loads((Path(folder) / "vae" / "config.json").read_text())["block_out_channels"]
        return 2 ** (len(blocks) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_stable_diffusion(model: str, device, dtype, flag: str, folder: Optional[Path] = None) -> StableDiffusionParts:
    """Tokenizer, text encoder, UNet, VAE and noise schedule of `model` (hub id or folder), frozen, on `device`;
    `folder`: the one `stable_diffusion_folder` already found (its configs; the weights are resolved from `model`
    beside them). The weights are fetched here: fp16 files for an fp16 run where the repository publishes them
    (never a full-precision copy only to cast it down)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    variant = half_variant(dtype)
    folder = resolve_hub_weights(model, "Stable Diffusion prior", flag, SD_REQUIRED, SD_SUBFOLDERS, variant=variant)
    weights = {"variant": weights_variant(folder, SD_SUBFOLDERS, variant)}
    parts = {
        "tokenizer": load_component(CLIPTokenizer.from_pretrained, folder, model, flag, subfolder="tokenizer"),
        "text_encoder": load_component(CLIPTextModel.from_pretrained, folder, model, flag, subfolder="text_encoder",
                                       **weights),
        "unet": load_component(UNet2DConditionModel.from_pretrained, folder, model, flag, subfolder="unet",
                               torch_dtype=dtype, **weights),
        "vae": load_component(AutoencoderKL.from_pretrained, folder, model, flag, subfolder="vae", torch_dtype=dtype,
                              **weights),
    }
    parts["text_encoder"] = parts["text_encoder"].to(dtype=dtype)
    for name in ("text_encoder", "unet", "vae"):
        parts[name] = freeze(parts[name].to(device))
    scheduler = load_component(DDPMScheduler.from_pretrained, folder, model, flag, subfolder="scheduler")
    return StableDiffusionParts(scheduler=scheduler, folder=folder, **parts)
