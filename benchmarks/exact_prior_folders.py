"""Build, offline, the model folders the exact priors are loaded from, in the public diffusers layouts:

- `stable-diffusion/`: unet, vae, text_encoder, tokenizer, scheduler and model_index.json, as a Stable Diffusion 2.1
  base checkpoint holds them (a UNet of 64² latents, a VAE of 8 pixels per latent: 512 px native);
- `zero123/`: unet with 8 input channels (32² latents: 256 px native, as Zero123), vae, image_encoder,
  feature_extractor, scheduler and the camera projection in the `clip_camera_projection` layout;
- `stable-zero123/`: the same, named Stable Zero123 in model_index.json (the guidance then reads the absolute polar
  angle).

The guidance loads every component through its own loaders; the benchmark then swaps the UNet's prediction for the
exact denoiser (`exact_prior.install_exact_priors`). The weights are random, chosen so that the conditions and the
renders survive the trip:
- the VAE's last 1x1 convolution is composed with a 4x4 map that makes the affine colour map fitted to its encoder
  (the CPU encoding) isotropic: equal singular values, so that no colour direction is drowned by the noise before
  the others; its scaling factor gives the latents unit standard deviation over the colour cube, as Stable
  Diffusion's factor gives its latents unit variance. A render's colours are then kept whole at the latent grid's
  resolution (64² for Stable Diffusion, 32² for Zero123 at their native sizes);
- the text encoder is a small random CLIP text model: different prompts give different embeddings, which is all the
  exact prior reads from them;
- the camera projection passes Zero123's four camera numbers through its first four outputs unchanged (the other
  outputs carry the image embedding), so that the exact prior reads back exactly what the guidance computed.

    .venv/bin/python benchmarks/exact_prior_folders.py --output /tmp/exact-prior-folders
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import torch

ROOT = Path(__file__).resolve().parents[1]
STABLE_DIFFUSION_SAMPLE_SIZE = 64
"""Latent side of the Stable Diffusion folder's UNet (SD 2.1 base: 512 px / 8)."""
ZERO123_SAMPLE_SIZE = 32
"""Latent side of the Zero123 folders' UNet (Zero123: 256 px / 8)."""
VAE_DOWNSAMPLE = 8
"""Pixels per latent along a side, as in Stable Diffusion's and Zero123's VAE."""


def _tests_on_path() -> None:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


@torch.no_grad()
def calibrate_vae(folder: Path) -> Dict[str, object]:
    """Make the affine latent map of the folder's VAE isotropic and of unit spread: its encoder's last 1x1
    convolution is composed with the 4x4 map that gives the colour map equal singular values, and vae/config.json's
    scaling factor is set so that the latents have unit standard deviation over the colour cube. Returns the factor
    and the map's singular values before and after."""
    from diffusers import AutoencoderKL

    from single_image_nerf.guidance.latents import fit_linear_latent_map

    vae_folder = Path(folder) / "vae"
    vae = AutoencoderKL.from_pretrained(str(vae_folder)).eval()
    scale = float(vae.config.scaling_factor)
    weight = fit_linear_latent_map(vae, torch.device("cpu")).weight.double() / scale  # (4, 3), unscaled latents
    left, singular, _ = torch.linalg.svd(weight, full_matrices=True)
    gains = torch.cat([singular.mean() / singular, torch.ones(1, dtype=torch.float64)])
    whitening = (left @ torch.diag(gains) @ left.T).float()  # on the mean's four channels
    conv = vae.quant_conv
    conv.weight[:4] = torch.einsum("oi,ichw->ochw", whitening, conv.weight[:4])
    conv.bias[:4] = whitening @ conv.bias[:4]
    latent_map = fit_linear_latent_map(vae, torch.device("cpu"))
    colours = torch.cartesian_prod(*[torch.linspace(0.0, 1.0, 5)] * 3)
    latents = colours @ latent_map.weight.T
    factor = scale / float((latents - latents.mean(dim=0)).pow(2).mean().sqrt())
    vae.register_to_config(scaling_factor=factor)
    vae.save_pretrained(str(vae_folder))
    after = torch.linalg.svdvals(latent_map.weight * (factor / scale))
    return {"scaling_factor": factor, "singular_values_before": [round(float(v), 4) for v in singular],
            "singular_values": [round(float(v), 3) for v in after]}


def camera_passing_projection(embed_dim: int, seed: int = 0) -> torch.nn.Linear:
    """A projection (image embedding + 4 camera numbers -> `embed_dim`) whose first four outputs are the camera
    numbers and whose others are a random projection of the image embedding."""
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(embed_dim + 4, embed_dim)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:4, embed_dim:] = torch.eye(4)
        linear.weight[4:, :embed_dim] = torch.randn(embed_dim - 4, embed_dim, generator=generator) / embed_dim**0.5
    return linear


def build_stable_diffusion_folder(folder: Path) -> Dict[str, object]:
    """The Stable Diffusion folder; returns its VAE calibration."""
    _tests_on_path()
    from tiny_diffusion import build_tiny_stable_diffusion  # pylint: disable=import-outside-toplevel

    build_tiny_stable_diffusion(folder, vae_downsample=VAE_DOWNSAMPLE, sample_size=STABLE_DIFFUSION_SAMPLE_SIZE)
    return calibrate_vae(folder)


def build_zero123_folder(folder: Path, stable: bool = False) -> Dict[str, object]:
    """A Zero123 folder (or, with `stable`, one named Stable Zero123); returns its VAE calibration."""
    _tests_on_path()
    from tiny_zero123 import EMBED_DIM, build_tiny_zero123, save_projection  # pylint: disable=import-outside-toplevel

    build_tiny_zero123(folder, vae_downsample=VAE_DOWNSAMPLE, sample_size=ZERO123_SAMPLE_SIZE)
    save_projection(folder, "clip_camera_projection", camera_passing_projection(EMBED_DIM))
    if stable:
        index_path = Path(folder) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_name_or_path"] = "stabilityai/stable-zero123"
        index_path.write_text(json.dumps(index, indent=2))
    return calibrate_vae(folder)


def build_exact_prior_folders(root: Path) -> Dict[str, Path]:
    """All three folders under `root` (built only where missing); returns them by name."""
    root = Path(root)
    builders = {"stable-diffusion": build_stable_diffusion_folder, "zero123": build_zero123_folder,
                "stable-zero123": lambda folder: build_zero123_folder(folder, stable=True)}
    folders = {}
    for name, build in builders.items():
        folder = root / name
        if not (folder / "model_index.json").is_file():
            partial = root / f"{name}.partial"
            report = build(partial)
            partial.rename(folder)
            print(f"{name}: {folder} (VAE scaling factor {report['scaling_factor']:.4f}, colour map singular values "
                  f"{report['singular_values']}, {report['singular_values_before']} before whitening)")
        folders[name] = folder
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="folder to build the model folders in")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, folder in build_exact_prior_folders(args.output).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
