"""Textual inversion as in RealFusion: learn one new token's embedding so that Stable Diffusion, prompted with it,
reproduces the object of the reference image.

Only the new token's vector is trained: the text encoder, UNet and VAE stay frozen, and the vector is spliced into
the token embeddings by a forward hook, so no other row can move. Augmented views of the reference (random resized
crops, flips, colour jitter, the object over random backgrounds) are encoded by the VAE and noised; the loss is the
usual denoising loss of the UNet conditioned on prompts like "a photo of <token>". The result is saved beside the
data as `token.bin` ({token: embedding}, the format of diffusers' `load_textual_inversion`) with `token.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from single_image_nerf.pretrained import STABLE_DIFFUSION_ID

TOKEN_FILE = "token.bin"
"""File name of a learned token beside the data."""
TOKEN_META_FILE = "token.json"
"""What the token was learned from (model, initializer word, steps), beside `TOKEN_FILE`."""


@dataclass
class TextualInversionConfig:
    """How to learn the object's token (defaults follow diffusers' textual-inversion example and RealFusion)."""

    model_path: str = STABLE_DIFFUSION_ID
    """Hub id or local folder of the Stable Diffusion checkpoint; must be the one the guidance will use."""
    token: str = "<object>"
    """The new token's text, used in prompts."""
    initializer: str = "object"
    """Word whose embedding (the mean over its sub-tokens) starts the new one."""
    steps: int = 3000
    """Optimisation steps."""
    learning_rate: float = 5e-3
    """AdamW learning rate of the token's vector."""
    batch_size: int = 4
    """Augmented views per step."""
    resolution: Optional[int] = None
    """Side of the views in pixels; None: the model's native size (512 for SD 2.1-base)."""
    crop_scale: Tuple[float, float] = (0.7, 1.0)
    """Range of the area of the random crops, as a fraction of the image."""
    flip_probability: float = 0.5
    """Probability of a horizontal flip."""
    jitter: float = 0.1
    """Strength of the brightness, contrast and saturation jitter (factors in [1 - jitter, 1 + jitter])."""
    templates: Tuple[str, ...] = field(
        default_factory=lambda: ("a photo of {}", "a rendering of {}", "a close-up photo of {}", "a good photo of {}",
                                 "a photo of the {}", "a bright photo of {}", "a cropped photo of {}")
    )
    """Prompt templates, `{}` standing for the token."""
    seed: int = 0
    """Seed of the augmentations, timesteps and noise."""
    progress: bool = True
    """Show a progress bar."""


def save_token(folder: Path, token: str, embedding: Tensor, meta: Optional[Dict] = None) -> Path:
    """Write `token.bin` ({token: embedding}) and `token.json` into `folder`; return the path of token.bin."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKEN_FILE
    # Each file is written beside its name and renamed into place, token.json first: an interrupted save never
    # leaves a token.bin cut short that training would read.
    partial = folder / f".{TOKEN_META_FILE}.partial"
    partial.write_text(json.dumps({"token": token, **(meta or {})}, indent=2))
    partial.replace(folder / TOKEN_META_FILE)
    partial = folder / f".{TOKEN_FILE}.partial"
    torch.save({token: embedding.detach().float().cpu().clone()}, partial)
    partial.replace(path)
    return path


def load_token(path: Path) -> Tuple[str, Tensor, Dict]:
    """(token, embedding, meta) from `token.bin` or the folder that holds it."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKEN_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or len(state) != 1:
        raise ValueError(f"{path} should hold a single {{token: embedding}} entry")
    (token, embedding), = state.items()
    meta_path = path.with_name(TOKEN_META_FILE)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return token, embedding.reshape(-1).float(), meta


def initial_embedding(tokenizer, text_encoder, word: str) -> Tensor:
    """Mean of the input embeddings of `word`'s sub-tokens (one sub-token for ordinary words of the real vocab)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"initializer {word!r} has no tokens")
    table = text_encoder.get_input_embeddings().weight
    return table[torch.tensor(ids, device=table.device)].float().mean(dim=0).detach()


def add_token(tokenizer, text_encoder, token: str, embedding: Tensor) -> int:
    """Add `token` to the tokenizer (if new) and set its row of the text encoder's input embeddings; return its id."""
    table = text_encoder.get_input_embeddings()
    if embedding.numel() != table.weight.shape[1]:
        raise ValueError(
            f"token {token!r} has a {embedding.numel()}-dim embedding but this text encoder expects "
            f"{table.weight.shape[1]}: it was learned for another model; run data_scripts/textual_inversion.py again"
        )
    tokenizer.add_tokens([token])
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id >= table.weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer))
        table = text_encoder.get_input_embeddings()
        table.requires_grad_(False)
    with torch.no_grad():
        table.weight[token_id] = embedding.to(table.weight)
    return token_id


def _colour_jitter(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    count = images.shape[0]
    factors = 1.0 + strength * (2.0 * torch.rand(3, count, 1, 1, 1, generator=generator) - 1.0)
    factors = factors.to(images)
    images = images * factors[0]
    grey = images.mean(dim=(1, 2, 3), keepdim=True)
    images = grey + (images - grey) * factors[1]
    luma = (0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3])
    images = luma + (images - luma) * factors[2]
    return images.clamp(0.0, 1.0)


def augment_views(rgba: Tensor, count: int, size: int, config: TextualInversionConfig,
                  generator: torch.Generator) -> Tensor:
    """`count` augmented (3, size, size) views in [0, 1] of an (H, W, 4) RGBA image: a random resized crop, a flip,
    colour jitter, composited over a random solid background."""
    height, width = rgba.shape[:2]
    image = rgba.permute(2, 0, 1).float()
    views = []
    for _ in range(count):
        area = height * width * (config.crop_scale[0] + (config.crop_scale[1] - config.crop_scale[0])
                                 * float(torch.rand((), generator=generator)))
        ratio = float(torch.exp(torch.empty(()).uniform_(-0.2877, 0.2877, generator=generator)))  # 3/4 .. 4/3
        crop_h = max(1, min(height, round((area / ratio) ** 0.5)))
        crop_w = max(1, min(width, round((area * ratio) ** 0.5)))
        top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
        left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
        crop = image[:, top:top + crop_h, left:left + crop_w][None]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        if float(torch.rand((), generator=generator)) < config.flip_probability:
            crop = crop.flip(-1)
        views.append(crop)
    stacked = torch.stack(views)
    rgb, alpha = stacked[:, :3], stacked[:, 3:4]
    rgb = _colour_jitter(rgb, config.jitter, generator)
    background = torch.rand(count, 3, 1, 1, generator=generator).to(rgb)
    return rgb * alpha + background * (1.0 - alpha)


def _splice_hook(token_id: int, vector: torch.nn.Parameter):
    """Forward hook on the token-embedding module: the rows of `token_id` become `vector` (which gets the grad)."""

    def hook(module, inputs, output):
        mask = (inputs[0] == token_id)[..., None]
        return torch.where(mask, vector.to(output.dtype), output)

    return hook


def learn_token(rgba: Tensor, config: TextualInversionConfig, parts, device: torch.device) -> Tensor:
    """Learn the embedding of `config.token` from an (H, W, 4) RGBA reference with loaded, frozen Stable Diffusion
    `parts` (see `loading.load_stable_diffusion`); return it (fp32, on the CPU). The tokenizer and text encoder of
    `parts` end up holding the learned token."""
    from tqdm import tqdm

    from single_image_nerf.guidance.latents import vae_encode

    tokenizer, text_encoder, unet, vae, scheduler = (parts.tokenizer, parts.text_encoder, parts.unet, parts.vae,
                                                     parts.scheduler)
    start = initial_embedding(tokenizer, text_encoder, config.initializer)
    token_id = add_token(tokenizer, text_encoder, config.token, start)
    vector = torch.nn.Parameter(start.clone().to(device))
    optimizer = torch.optim.AdamW([vector], lr=config.learning_rate, weight_decay=0.0)
    handle = text_encoder.get_input_embeddings().register_forward_hook(_splice_hook(token_id, vector))
    generator = torch.Generator().manual_seed(config.seed)
    size = config.resolution or parts.native_resolution
    alphas = scheduler.alphas_cumprod.to(device)
    prediction = scheduler.config.prediction_type
    dtype = next(unet.parameters()).dtype
    try:
        for _ in tqdm(range(config.steps), desc="textual inversion", disable=not config.progress):
            views = augment_views(rgba, config.batch_size, size, config, generator).to(device)
            with torch.no_grad():
                latents = vae_encode(vae, views)
            noise = torch.randn(latents.shape, generator=generator).to(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch_size,), generator=generator)
            abar = alphas[t.to(device)].reshape(-1, 1, 1, 1)
            noisy = abar.sqrt() * latents + (1.0 - abar).sqrt() * noise
            choice = torch.randint(0, len(config.templates), (config.batch_size,), generator=generator)
            prompts = [config.templates[int(i)].format(config.token) for i in choice]
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            states = text_encoder(ids)[0]
            output = unet(noisy.to(dtype), t.to(device), encoder_hidden_states=states.to(dtype)).sample.float()
            target = abar.sqrt() * noise - (1.0 - abar).sqrt() * latents if prediction == "v_prediction" else noise
            loss = F.mse_loss(output, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        handle.remove()
    learned = vector.detach().float()
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight[token_id] = learned.to(dtype=text_encoder.dtype)
    return learned.cpu()


def reference_rgba(data: Path) -> Tuple[Tensor, Path]:
    """(H, W, 4) RGBA in [0, 1] of a preprocessed data folder (its rgba.png) or of an image file, and the folder
    beside which the token is saved."""
    import numpy as np
    from PIL import Image

    data = Path(data)
    image_path = data / "rgba.png" if data.is_dir() else data
    if not image_path.is_file():
        from single_image_nerf.errors import UserInputError

        raise UserInputError(f"{image_path} does not exist: give a preprocessed data folder or an image")
    try:
        image = Image.open(image_path).convert("RGBA")
    except (OSError, ValueError) as error:
        from single_image_nerf.errors import UserInputError

        raise UserInputError(f"{image_path} is not a readable image ({type(error).__name__}): give a preprocessed "
                             "data folder or an RGBA image") from None
    rgba = torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)
    return rgba, (data if data.is_dir() else data.parent)


def check_options(config: TextualInversionConfig, folder: Path) -> None:
    """Refuse impossible options and an output folder that cannot be written, before any weights are loaded."""
    import os

    from single_image_nerf.errors import UserInputError

    checks = [(config.steps >= 1, f"--steps must be at least 1, got {config.steps}"),
              (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
              (config.learning_rate > 0, f"--learning-rate must be positive, got {config.learning_rate}"),
              (config.resolution is None or config.resolution >= 8,
               f"--resolution must be at least 8, got {config.resolution}"),
              (0 < config.crop_scale[0] <= config.crop_scale[1] <= 1,
               f"--crop-scale must be ordered within (0, 1], got {config.crop_scale}")]
    for ok, message in checks:
        if not ok:
            raise UserInputError(message)
    ancestor = Path(folder).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write the token into {folder}: {ancestor} is not a writable folder")


def textual_inversion(data: Path, config: TextualInversionConfig, device: Optional[torch.device] = None,
                      output: Optional[Path] = None) -> Path:
    """Learn the token for the image of `data` (a preprocessed folder or an image) and save it beside the data
    (or into `output`); return the path of token.bin. fp16 weights on CUDA, fp32 otherwise."""
    from single_image_nerf.guidance.loading import load_stable_diffusion

    device = torch.device(device or "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rgba, folder = reference_rgba(data)
    check_options(config, output or folder)
    parts = load_stable_diffusion(config.model_path, device, dtype, flag="--model-path")
    embedding = learn_token(rgba, config, parts, device)
    meta = {item.name: getattr(config, item.name) for item in fields(TextualInversionConfig)
            if item.name not in ("token", "progress")}
    return save_token(output or folder, config.token, embedding, meta)
