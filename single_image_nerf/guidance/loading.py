"""Find pretrained weights for a guidance: a local folder, the Hugging Face cache, or a download; else one line.

`from_pretrained` on a hub id without network retries for minutes (transformers) or, for some tokenizers, quietly
builds an empty one; so the folder is resolved first with `huggingface_hub.snapshot_download`, which answers at once
from the cache or the hub, and every component is then loaded from that local folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from single_image_nerf.errors import UserInputError


class GuidanceUnavailableError(UserInputError):
    """A guidance's weights cannot be found: the message names the model and how to give a local folder."""


def resolve_pretrained(
    model: str, patterns: Sequence[str], required: Iterable[str], flag: str, what: str = "weights"
) -> Path:
    """A local folder holding `model` (a folder path or a hub id) with every file in `required` (relative paths).

    Hub ids are fetched with `allow_patterns=patterns` (cache first; nothing is downloaded when it is complete or
    HF_HUB_OFFLINE=1). Raises GuidanceUnavailableError naming `model` and `flag` when that fails."""
    path = Path(model).expanduser()
    hint = f"pass a local folder with {flag} /path/to/folder"
    if path.is_dir():
        folder = path
    elif model.startswith(("/", ".", "~")):
        raise GuidanceUnavailableError(f"{what} folder '{model}' does not exist; {hint}")
    else:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, allow_patterns=list(patterns)))
        except Exception as error:  # offline, unknown repo, gated repo, no disk: all end the same way
            raise GuidanceUnavailableError(
                f"cannot load {what} '{model}': not in the local Hugging Face cache and the hub is unreachable "
                f"({type(error).__name__}); download it once with network, or {hint}"
            ) from None
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise GuidanceUnavailableError(f"{what} '{model}' lacks {', '.join(missing)} (in {folder}); {hint}")
    return folder


def has_weights(folder: Path, subfolders: Sequence[str]) -> bool:
    """True if each of `subfolders` ("" for the folder itself) holds a safetensors or PyTorch weight file."""
    patterns = ("*.safetensors", "*.bin")
    return all(any(any((folder / sub).glob(pattern)) for pattern in patterns) for sub in subfolders)


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
_SD_CONFIGS = ("*.json", "*.txt")
_SD_SAFETENSORS = _SD_CONFIGS + tuple(f"{sub}/*model.safetensors" for sub in SD_SUBFOLDERS)
_SD_PICKLES = _SD_CONFIGS + tuple(f"{sub}/*model.bin" for sub in SD_SUBFOLDERS)


@dataclass
class StableDiffusionParts:
    """The frozen components of a Stable Diffusion checkpoint (fp32 weights loaded, then cast to `dtype`)."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler: Any
    folder: Path

    @property
    def vae_scale_factor(self) -> int:
        """How many pixels one latent covers along a side (8 for SD 1.x/2.x)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """Side in pixels of the images the UNet was trained on (512 for SD 1.5 and 2.1-base)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def freeze(module):
    """Evaluation mode and no parameter gradients: the guidance's weights never change and never get a .grad."""
    module.eval()
    module.requires_grad_(False)
    return module


def stable_diffusion_folder(model: str, flag: str) -> Path:
    """The local folder of `model` (hub id or folder) with the files the guidance needs; one line if there is none."""
    what = "Stable Diffusion weights"
    folder = resolve_pretrained(model, _SD_SAFETENSORS, SD_REQUIRED, flag, what)
    if not has_weights(folder, SD_SUBFOLDERS) and not Path(model).expanduser().is_dir():
        folder = resolve_pretrained(model, _SD_PICKLES, SD_REQUIRED, flag, what)
    return folder


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
    `folder`: the one `stable_diffusion_folder` already found."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = folder if folder is not None else stable_diffusion_folder(model, flag)
    parts = {
        "tokenizer": load_component(CLIPTokenizer.from_pretrained, folder, model, flag, subfolder="tokenizer"),
        "text_encoder": load_component(CLIPTextModel.from_pretrained, folder, model, flag, subfolder="text_encoder"),
        "unet": load_component(UNet2DConditionModel.from_pretrained, folder, model, flag, subfolder="unet",
                               torch_dtype=dtype),
        "vae": load_component(AutoencoderKL.from_pretrained, folder, model, flag, subfolder="vae", torch_dtype=dtype),
    }
    parts["text_encoder"] = parts["text_encoder"].to(dtype=dtype)
    for name in ("text_encoder", "unet", "vae"):
        parts[name] = freeze(parts[name].to(device))
    scheduler = load_component(DDPMScheduler.from_pretrained, folder, model, flag, subfolder="scheduler")
    return StableDiffusionParts(scheduler=scheduler, folder=folder, **parts)
