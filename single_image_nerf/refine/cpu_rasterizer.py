"""One rasterisation entry point for 3D Gaussians: gsplat's CUDA kernels on a GPU, an exact dense path on a CPU.

`rasterize` takes the arguments of `gsplat.rasterization` (unpacked mode) and returns the same triple
`(render_colors [C,H,W,X], render_alphas [C,H,W,1], meta)`. Every tensor must be on the means' device (checked, one
line otherwise). On CUDA tensors it calls `gsplat.rasterization`.
On any other device gsplat's CUDA kernels are missing, so it uses gsplat's own pure-torch projection, covariance and
spherical-harmonics code (`gsplat/cuda/_torch_impl.py`) and composites every pixel front to back in dense torch,
reproducing the CUDA kernel's rules: pixel centres at +0.5, 3-sigma radii and tile-aligned footprints, alpha clamped
at 0.999, contributions below 1/255 skipped, and a pixel done once its transmittance would fall to 1e-4.
Gradients come from autograd. `meta` carries what gsplat's densification strategies read (means2d with its gradient,
radii, width, height, n_cameras, gaussian_ids) and, when `absgrad` is set, `means2d.absgrad` is the per-pixel sum of
absolute gradients as the CUDA backward computes it.

The dense path costs O(cameras x pixels x Gaussians per tile row); it is for tests and small CPU runs (see
docs/refine.md for measured speeds), not for production training.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

ALPHA_MAX = 0.999
"""Per-Gaussian alpha clamp (as in gsplat's kernel)."""
ALPHA_MIN = 1.0 / 255.0
"""Contributions below this alpha are skipped (as in gsplat's kernel)."""
TRANSMITTANCE_MIN = 1e-4
"""A pixel is done once its transmittance would fall to this value; that Gaussian is excluded."""
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    absgrad: bool = False,
    rasterize_mode: str = "classic",
    tile_size: int = 16,
    backend: str = "auto",
    max_chunk_elements: int = 1 << 23,
    **cuda_kwargs,
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise Gaussians [N] into C images; the arguments are gsplat.rasterization's (see the module docstring).

    `backend`: "auto" (gsplat CUDA on CUDA tensors, dense torch otherwise), "gsplat" or "torch" to force one.
    `max_chunk_elements` bounds pixels x Gaussians per dense chunk (memory). Extra keyword arguments go to gsplat
    only on the CUDA path (for example `packed`, `sparse_grad`).
    """
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"Unknown rasterisation backend {backend!r}; use auto, gsplat or torch.")
    check_same_device(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats,
                      Ks=Ks, backgrounds=backgrounds)
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        from gsplat.rendering import rasterization

        cuda_kwargs.setdefault("packed", False)
        return rasterization(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks,
            width=width, height=height, near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip,
            eps2d=eps2d, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode, absgrad=absgrad,
            rasterize_mode=rasterize_mode, tile_size=tile_size, **cuda_kwargs,
        )
    return rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, backgrounds=backgrounds,
        render_mode=render_mode, absgrad=absgrad, rasterize_mode=rasterize_mode, tile_size=tile_size,
        max_chunk_elements=max_chunk_elements,
    )


def check_same_device(**tensors: Optional[Tensor]) -> None:
    """One line naming every tensor that is not on the first one's device (None entries are skipped): the CUDA
    kernels reject a CPU tensor among CUDA ones, and the dense path would fail somewhere deep inside."""
    named = [(name, tensor) for name, tensor in tensors.items() if tensor is not None]
    first_name, first = named[0]
    stray = [f"{name} on {tensor.device}" for name, tensor in named[1:] if tensor.device != first.device]
    if stray:
        raise ValueError(f"rasterize: every input must be on the device of {first_name} ({first.device}), but "
                         f"{', '.join(stray)}; move them with .to({first_name}.device)")


def project(
    means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    near_plane: float, far_plane: float, radius_clip: float, eps2d: float, antialiased: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """gsplat's pure-torch projection: (radii [C,N] int, means2d [C,N,2], depths [C,N], conics [C,N,3],
    compensations [C,N] or None)."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=antialiased,
    )
    if radius_clip > 0:
        radii = torch.where(radii.float() <= radius_clip, torch.zeros_like(radii), radii)
    return radii, means2d, depths, conics, compensations


def view_colors(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: Optional[int]) -> Tensor:
    """Per-camera colours [C,N,D]: post-activation values as given, or SH coefficients evaluated toward each camera
    (plus 0.5, clamped at 0, as gsplat does)."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return colors if colors.dim() == 3 else colors.expand(C, -1, -1)
    from gsplat.cuda._torch_impl import _spherical_harmonics

    camera_centres = torch.linalg.inv(viewmats)[:, :3, 3]
    dirs = means[None, :, :] - camera_centres[:, None, :]
    shs = colors if colors.dim() == 4 else colors.expand(C, -1, -1, -1)
    return torch.clamp_min(_spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)


def tile_ranges(means2d: Tensor, radii: Tensor, tile_size: int, width: int, height: int) -> Tensor:
    """Tiles each Gaussian touches, as gsplat's `isect_tiles` computes them: [C,N,4] = (x0, x1, y0, y1), x1/y1
    exclusive, clamped to the tile grid."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    centre = means2d.detach() / tile_size
    r = radii.to(centre.dtype)[..., None] / tile_size
    low, high = torch.floor(centre - r), torch.ceil(centre + r)
    x0, y0 = low[..., 0].clamp(0, tiles_x), low[..., 1].clamp(0, tiles_y)
    x1, y1 = high[..., 0].clamp(0, tiles_x), high[..., 1].clamp(0, tiles_y)
    return torch.stack([x0, x1, y0, y1], dim=-1).long()


def composite_front_to_back(alphas: Tensor, values: Tensor) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing along the last Gaussian axis, with gsplat's stopping rule.

    alphas [P,K] (already clamped; skipped contributions set to 0), values [P,K,D], Gaussians sorted near to far.
    Returns (colour [P,D], alpha [P,1]).
    """
    one_minus = 1.0 - alphas
    after = torch.cumprod(one_minus, dim=-1)
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=-1)
    keep = (after > TRANSMITTANCE_MIN).to(alphas.dtype)
    weights = alphas * before * keep
    colour = torch.einsum("pk,pkd->pd", weights, values)
    return colour, weights.sum(dim=-1, keepdim=True)


def rasterize_torch(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0,
    eps2d: float = 0.3, sh_degree: Optional[int] = None, backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB", absgrad: bool = False, rasterize_mode: str = "classic", tile_size: int = 16,
    max_chunk_elements: int = 1 << 23,
) -> Tuple[Tensor, Tensor, Dict]:
    """The dense pure-torch rasteriser (any device); same contract as `rasterize`."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"Unknown render_mode {render_mode!r}; expected one of {RENDER_MODES}.")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"Unknown rasterize_mode {rasterize_mode!r}; expected classic or antialiased.")
    C, N = viewmats.shape[0], means.shape[0]
    radii, means2d, depths, conics, compensations = project(
        means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, radius_clip, eps2d,
        rasterize_mode == "antialiased",
    )
    view_opacities = opacities[None, :].expand(C, -1)
    if compensations is not None:
        view_opacities = view_opacities * compensations
    values = view_colors(means, colors, viewmats, sh_degree)
    if render_mode in ("RGB+D", "RGB+ED"):
        values = torch.cat([values, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        values = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    absgrad_buffer = torch.zeros_like(means2d) if absgrad and means2d.requires_grad else None
    tiles = tile_ranges(means2d, radii, tile_size, width, height)
    renders, alphas = [], []
    for c in range(C):
        render, alpha = _render_camera(
            means2d[c], conics[c], view_opacities[c], values[c], depths[c], radii[c], tiles[c], width, height,
            tile_size, max_chunk_elements, None if absgrad_buffer is None else absgrad_buffer[c],
        )
        renders.append(render)
        alphas.append(alpha)
    render_colors, render_alphas = torch.stack(renders), torch.stack(alphas)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    if render_mode in ("ED", "RGB+ED"):
        expected = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected], dim=-1)
    if absgrad_buffer is not None:
        means2d.absgrad = absgrad_buffer
    meta = {
        "camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
        "conics": conics, "opacities": view_opacities, "width": width, "height": height, "tile_size": tile_size,
        "n_cameras": C, "tile_width": math.ceil(width / tile_size), "tile_height": math.ceil(height / tile_size),
    }
    return render_colors, render_alphas, meta


def _render_camera(
    means2d: Tensor, conics: Tensor, opacities: Tensor, values: Tensor, depths: Tensor, radii: Tensor, tiles: Tensor,
    width: int, height: int, tile_size: int, max_chunk_elements: int, absgrad_buffer: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:
    """One camera, one band of tile rows at a time: (colour [H,W,D], alpha [H,W,1])."""
    device, dtype, D = means2d.device, means2d.dtype, values.shape[-1]
    visible = torch.nonzero(radii > 0).squeeze(-1)
    visible = visible[torch.argsort(depths.detach()[visible], stable=True)]
    colour = torch.zeros(height, width, D, device=device, dtype=dtype)
    alpha = torch.zeros(height, width, 1, device=device, dtype=dtype)
    if visible.numel() == 0:
        return colour, alpha
    rows_out, alphas_out = [], []
    for tile_row in range(math.ceil(height / tile_size)):
        y_start, y_end = tile_row * tile_size, min((tile_row + 1) * tile_size, height)
        ids = visible[(tiles[visible, 2] <= tile_row) & (tiles[visible, 3] > tile_row)]
        band_colour, band_alpha = _render_band(
            means2d, conics, opacities, values, tiles, ids, y_start, y_end, width, tile_size, max_chunk_elements,
            absgrad_buffer,
        )
        rows_out.append(band_colour)
        alphas_out.append(band_alpha)
    return torch.cat(rows_out, dim=0), torch.cat(alphas_out, dim=0)


def _render_band(
    means2d: Tensor, conics: Tensor, opacities: Tensor, values: Tensor, tiles: Tensor, ids: Tensor, y_start: int,
    y_end: int, width: int, tile_size: int, max_chunk_elements: int, absgrad_buffer: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:
    """Rows y_start..y_end-1 (inside one tile row) against the depth-sorted Gaussians `ids` touching them."""
    device, dtype, D = means2d.device, means2d.dtype, values.shape[-1]
    rows = y_end - y_start
    if ids.numel() == 0:
        return (torch.zeros(rows, width, D, device=device, dtype=dtype),
                torch.zeros(rows, width, 1, device=device, dtype=dtype))
    ys, xs = torch.meshgrid(
        torch.arange(y_start, y_end, device=device), torch.arange(width, device=device), indexing="ij"
    )
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    pixel_centres = torch.stack([xs, ys], dim=-1).to(dtype) + 0.5
    pixel_tile_x = (xs // tile_size)[:, None]
    g_tiles = tiles[ids]
    mu, conic, opacity, value = means2d[ids], conics[ids], opacities[ids], values[ids]
    step = max(1, max_chunk_elements // max(1, ids.numel()))
    colours, alphas = [], []
    for start in range(0, pixel_centres.shape[0], step):
        p = pixel_centres[start:start + step]
        mu_p = mu.unsqueeze(0).expand(p.shape[0], -1, -1)
        if absgrad_buffer is not None and mu_p.requires_grad:
            mu_p.register_hook(_absgrad_hook(absgrad_buffer, ids))
        delta = p[:, None, :] - mu_p
        dx, dy = delta[..., 0], delta[..., 1]
        sigma = 0.5 * (conic[None, :, 0] * dx * dx + conic[None, :, 2] * dy * dy) + conic[None, :, 1] * dx * dy
        raw = opacity[None, :] * torch.exp(-sigma)
        a = torch.clamp(raw, max=ALPHA_MAX)
        tx = pixel_tile_x[start:start + step]
        inside = (g_tiles[None, :, 0] <= tx) & (g_tiles[None, :, 1] > tx)
        use = inside & (sigma >= 0) & (a >= ALPHA_MIN)
        a = torch.where(use, a, torch.zeros_like(a))
        colour, alpha = composite_front_to_back(a, value.unsqueeze(0).expand(p.shape[0], -1, -1))
        colours.append(colour)
        alphas.append(alpha)
    return torch.cat(colours).reshape(rows, width, D), torch.cat(alphas).reshape(rows, width, 1)


def _absgrad_hook(buffer: Tensor, ids: Tensor):
    """Backward hook adding |per-pixel gradient| of the 2D means into `buffer` (gsplat's absgrad)."""

    def hook(grad: Tensor) -> None:
        buffer.index_add_(0, ids, grad.abs().sum(dim=0))

    return hook
