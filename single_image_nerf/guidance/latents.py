"""Images in [0, 1] to Stable Diffusion latents and back: through the VAE, or through an affine colour map.

The VAE path resizes the render to the model's native size and runs the encoder (the gradient flows through its
activations, never into its weights). The latent-size path resizes the render straight to the latent grid and maps
each pixel's colour to the 4 latent channels with an affine map fitted once to the encoder on flat colours: the
3-channel analogue of threestudio's `rgb_as_latents`, cheap because the encoder never runs while training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (B, C, H, W) to size x size, antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < max(images.shape[-2:])
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _scale_shift(vae) -> tuple:
    shift = getattr(vae.config, "shift_factor", None)
    return float(vae.config.scaling_factor), float(shift) if shift is not None else 0.0


def vae_encode(vae, images: Tensor) -> Tensor:
    """Latents (fp32) of images in [0, 1]: the posterior mean, scaled as the UNet expects."""
    scale, shift = _scale_shift(vae)
    dtype = next(vae.parameters()).dtype
    posterior = vae.encode((images * 2.0 - 1.0).to(dtype)).latent_dist
    return (posterior.mean.float() - shift) * scale


def vae_decode(vae, latents: Tensor) -> Tensor:
    """Images in [0, 1] (fp32) decoded from scaled latents."""
    scale, shift = _scale_shift(vae)
    dtype = next(vae.parameters()).dtype
    images = vae.decode((latents / scale + shift).to(dtype)).sample.float()
    return (images * 0.5 + 0.5).clamp(0.0, 1.0)


@dataclass
class LinearLatentMap:
    """latent = weight @ rgb + bias per pixel, with rgb in [0, 1]; `decode` is its least-squares inverse."""

    weight: Tensor
    """(4, 3) colour-to-latent matrix."""
    bias: Tensor
    """(4,) latent of black."""

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, h, w) images in [0, 1] at latent size to (B, 4, h, w) latents."""
        weight, bias = self.weight.to(images), self.bias.to(images)
        return torch.einsum("oc,bchw->bohw", weight, images) + bias[None, :, None, None]

    def decode(self, latents: Tensor) -> Tensor:
        """(B, 4, h, w) latents to the (B, 3, h, w) colours that best explain them, clamped to [0, 1]."""
        weight, bias = self.weight.to(latents), self.bias.to(latents)
        inverse = torch.linalg.pinv(weight)
        return torch.einsum("co,bohw->bchw", inverse, latents - bias[None, :, None, None]).clamp(0.0, 1.0)


@torch.no_grad()
def fit_linear_latent_map(vae, device, levels=(0.0, 0.5, 1.0), latent_side: int = 8) -> LinearLatentMap:
    """Fit `LinearLatentMap` to the VAE encoder on flat images of every colour in `levels`^3 (27 by default),
    reading the latents in the middle of each image, away from the encoder's zero padding."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = latent_side * factor
    colours = torch.tensor(list(itertools.product(levels, repeat=3)), dtype=torch.float32, device=device)
    images = colours[:, :, None, None].expand(-1, -1, side, side)
    latents = vae_encode(vae, images)
    margin = latent_side // 4
    centre = latents[:, :, margin:latent_side - margin, margin:latent_side - margin].mean(dim=(2, 3))
    design = torch.cat([colours, torch.ones_like(colours[:, :1])], dim=1)
    solution = torch.linalg.lstsq(design.double().cpu(), centre.double().cpu()).solution.float()
    return LinearLatentMap(weight=solution[:3].T.contiguous().to(device), bias=solution[3].to(device))
