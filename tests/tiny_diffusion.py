"""Tiny random-weight Stable Diffusion and CLIP models, built offline and saved with `save_pretrained`.

The guidance loads them back through the same `from_pretrained` calls that users take with a hub id or a local
folder. Everything here is small enough that a UNet forward takes milliseconds on a CPU.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

TINY_MAX_LENGTH = 77
"""Token length of the tiny tokenizers (the same as Stable Diffusion's)."""

_MERGES = ["a t", "o n", "i e", "e w", "t h", "o t", "p h", "ph ot", "v ie", "vie w", "s i", "d e", "b a"]
"""A few byte-pair merges; each merge's result (and its `</w>` twin) is written into the vocabulary."""


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP's byte-to-printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_tiny_tokenizer_files(folder: Path) -> int:
    """Write vocab.json and merges.txt of a byte-level CLIP tokenizer into `folder`; return the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    characters = list(_bytes_to_unicode().values())
    tokens: List[str] = characters + [c + "</w>" for c in characters]
    for merge in _MERGES:
        merged = merge.replace(" ", "")
        tokens += [merged, merged + "</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    return len(vocab)


def _tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tiny_tokenizer_files(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": TINY_MAX_LENGTH}))
    return CLIPTokenizer.from_pretrained(folder)


def _tiny_text_config(tokenizer, hidden: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TINY_MAX_LENGTH, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_stable_diffusion(folder: Path, prediction_type: str = "epsilon", seed: int = 0,
                                vae_downsample: int = 2, sample_size: int = 8) -> Path:
    """A tiny random Stable Diffusion pipeline saved to `folder` in the diffusers layout (model_index.json and one
    subfolder per component). Latents are 8x8 and the VAE downsamples by 2, so the native image size is 16 px.
    `vae_downsample=8` gives the VAE four encoder blocks like the real one (native size 64 px), so that a 512 px
    input becomes a 64x64 latent as in Stable Diffusion (benchmarks). `sample_size` is the UNet's latent side."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(folder / "tokenizer")
    text_encoder = CLIPTextModel(_tiny_text_config(tokenizer)).eval()
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    blocks = {2: (32, 64), 8: (32, 32, 64, 64)}[vae_downsample]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=blocks, layers_per_block=1,
        latent_channels=4, norm_num_groups=32, sample_size=sample_size * vae_downsample,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    # Keep the tokenizer in the layout of the hub checkpoints (vocab.json + merges.txt, no tokenizer.json).
    (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    write_tiny_tokenizer_files(folder / "tokenizer")
    return folder


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random CLIPModel (text and vision towers) with its tokenizer and image processor, saved to `folder`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(folder)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=32,
    )
    config = CLIPConfig(
        text_config=_tiny_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@functools.lru_cache(maxsize=None)
def tiny_stable_diffusion_folder(prediction_type: str = "epsilon") -> Path:
    """A tiny pipeline built once per test session (per prediction type) in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="tiny-sd-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_tiny_stable_diffusion(folder / "sd", prediction_type=prediction_type)


@functools.lru_cache(maxsize=None)
def tiny_clip_folder() -> Path:
    """A tiny CLIP model built once per test session in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_tiny_clip(folder / "clip")


def sd21_base_modules(tokenizer):
    """The SD-2.1-base architecture at random weights (text encoder, UNet, VAE): the real model's compute, for
    benchmarks. The tokenizer may be the tiny one (the vocabulary does not change the cost of a step)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=TINY_MAX_LENGTH, hidden_act="gelu", projection_dim=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, sample_size=512, scaling_factor=0.18215,
    )
    return text_encoder, unet, vae
