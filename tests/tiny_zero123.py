"""A tiny random Zero123 folder in the public diffusers layout, built offline.

The layout is that of ashawkey/zero123-xl-diffusers (and bennyguo's, stable-zero123's): unet/ (8 input channels: the
noisy latent and the reference latent), vae/, image_encoder/ (CLIPVisionModelWithProjection), feature_extractor/
(CLIPImageProcessor), scheduler/, clip_camera_projection/ (a Linear from image embedding + 4 camera numbers to the
image embedding, keys `proj.weight`, `proj.bias`) and a model_index.json naming the custom pipeline class. kxic's
conversions name the projection cc_projection/ with keys `projection.*`: `projection="cc_projection"` writes that.
Each component is saved with its own `save_pretrained`, so the guidance reads what the public folders hold.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import torch

EMBED_DIM = 32
"""Width of the tiny CLIP image embedding (768 in Zero123)."""

PROJECTIONS = {
    "clip_camera_projection": ("proj", {"_class_name": "CLIPCameraProjection", "embedding_dim": EMBED_DIM,
                                        "additional_embeddings": 4}),
    "cc_projection": ("projection", {"_class_name": "CCProjection", "in_channel": EMBED_DIM + 4,
                                     "out_channel": EMBED_DIM}),
}
"""The two public names of the camera projection: subfolder -> (key prefix, config.json)."""


def save_projection(folder: Path, layout: str, linear: torch.nn.Linear) -> Path:
    """Write `linear` as the camera projection of `layout` (a key of PROJECTIONS) into `folder`."""
    from safetensors.torch import save_file

    prefix, config = PROJECTIONS[layout]
    target = Path(folder) / layout
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps({**config, "_diffusers_version": "0.21.4"}))
    tensors = {f"{prefix}.weight": linear.weight.detach().contiguous(), f"{prefix}.bias": linear.bias.detach().contiguous()}
    save_file(tensors, str(target / "diffusion_pytorch_model.safetensors"))
    return target


def build_tiny_zero123(folder: Path, seed: int = 0, projection: str = "clip_camera_projection",
                       vae_downsample: int = 2, sample_size: int = 8) -> Path:
    """A tiny random Zero123 saved to `folder`: latents of `sample_size`² and a VAE downsampling by
    `vae_downsample` (native image side sample_size * vae_downsample: 16 px by default)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=EMBED_DIM, attention_head_dim=8, norm_num_groups=32,
    )
    blocks = {2: (32, 64), 8: (32, 32, 64, 64)}[vae_downsample]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=blocks, layers_per_block=1,
        latent_channels=4, norm_num_groups=32, sample_size=sample_size * vae_downsample,
    )
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=EMBED_DIM,
    )).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    image_encoder.save_pretrained(folder / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "feature_extractor")
    scheduler.save_pretrained(folder / "scheduler")
    linear = torch.nn.Linear(EMBED_DIM + 4, EMBED_DIM)
    save_projection(folder, projection, linear)
    index = {
        "_class_name": ["zero123", "Zero123Pipeline"], "_diffusers_version": "0.21.4",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], projection: ["zero123", type_name(projection)],
        "requires_safety_checker": False, "safety_checker": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def type_name(layout: str) -> str:
    """The class model_index.json names for a projection layout."""
    return PROJECTIONS[layout][1]["_class_name"]


@functools.lru_cache(maxsize=None)
def tiny_zero123_folder(projection: str = "clip_camera_projection") -> Path:
    """A tiny Zero123 folder built once per test session (per projection layout) in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="tiny-zero123-"))
    atexit.register(shutil.rmtree, folder, True)
    return build_tiny_zero123(folder / "zero123", projection=projection)


def zero123_xl_modules():
    """The Zero123-XL architecture at random weights (UNet with 8 input channels, the SD 1.x VAE, the CLIP ViT-L/14
    image encoder and the 772 -> 768 projection): the real model's compute, for benchmarks."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=32, in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, sample_size=256, scaling_factor=0.18215,
    )
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
        patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ))
    projection = torch.nn.Linear(768 + 4, 768)
    return unet, vae, image_encoder, projection
