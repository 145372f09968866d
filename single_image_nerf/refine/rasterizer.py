"""One rasterisation entry point for 3D Gaussians: gsplat's CUDA kernels on a GPU, an exact dense path on a CPU.

`rasterize` takes the arguments of `gsplat.rasterization` (unpacked mode) and returns the same triple
`(render_colors [C,H,W,X], render_alphas [C,H,W,1], meta)`. Every tensor must be on the means' device (checked, one
line otherwise). On CUDA tensors it calls `gsplat.rasterization` (save for the median depth, see RENDER_MODES).
On any other device gsplat's CUDA kernels are missing, so it uses gsplat's own pure-torch projection, covariance and
spherical-harmonics code (`gsplat/cuda/_torch_impl.py`) and composites every pixel front to back in dense torch,
reproducing the CUDA kernel's rules: pixel centres at +0.5, 3-sigma radii and tile-aligned footprints, alpha clamped
at 0.999, contributions below 1/255 skipped, and a pixel done once its transmittance would fall to 1e-4.
Gradients come from autograd. `meta` carries what gsplat's densification strategies read (means2d with its gradient,
radii, width, height, n_cameras, gaussian_ids) and, when `absgrad` is set, `means2d.absgrad` is the per-pixel sum of
absolute gradients as the CUDA backward computes it.

The dense path bins Gaussians by tile as gsplat does and costs O(pixels x Gaussians per tile); it is for tests and
CPU runs (see docs/refine.md for measured speeds), not for production training.
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
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED", "MD", "RGB+MD")
"""gsplat's modes, and the median depth ("MD"): the depth of the Gaussian at which a pixel's accumulated opacity
reaches one half (2DGS's median depth), where it does; the expected depth elsewhere. Unlike the expected depth it
is not pulled behind the surface by the translucent Gaussians under it. gsplat's kernels have no median, so it is
rendered by the dense path on every device."""
MEDIAN_OPACITY = 0.5
"""Accumulated opacity at which the median depth is read."""


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
    if render_mode.endswith("MD"):
        backend = "torch"
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
    if render_mode in ("RGB+D", "RGB+ED", "RGB+MD"):
        values = torch.cat([values, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED", "MD"):
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
            median=render_mode.endswith("MD"),
        )
        renders.append(render)
        alphas.append(alpha)
    render_colors, render_alphas = torch.stack(renders), torch.stack(alphas)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    if render_mode in ("ED", "RGB+ED", "MD", "RGB+MD"):
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
    median: bool = False,
) -> Tuple[Tensor, Tensor]:
    """One camera, binned by tile as gsplat's `isect_tiles` does: every (Gaussian, tile) pair it touches, sorted by
    tile then depth; tiles of similar Gaussian counts are composited together as dense [tiles, pixels, Gaussians]
    blocks of at most `max_chunk_elements`. Returns (colour [H,W,D], alpha [H,W,1]); with `median` the last channel
    is the median depth times the alpha (see RENDER_MODES)."""
    device, dtype, D = means2d.device, means2d.dtype, values.shape[-1]
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, n_pixels = tiles_x * tiles_y, tile_size * tile_size
    visible = torch.nonzero(radii > 0).squeeze(-1)
    visible = visible[torch.argsort(depths.detach()[visible], stable=True)]
    box = tiles[visible]
    span_x, span_y = (box[:, 1] - box[:, 0]).clamp_min(0), (box[:, 3] - box[:, 2]).clamp_min(0)
    touched = span_x * span_y
    pairs = int(touched.sum())
    if pairs == 0:
        return (torch.zeros(height, width, D, device=device, dtype=dtype),
                torch.zeros(height, width, 1, device=device, dtype=dtype))
    owner = torch.repeat_interleave(torch.arange(visible.numel(), device=device), touched)
    local = torch.arange(pairs, device=device) - (torch.cumsum(touched, 0) - touched)[owner]
    tile_ids = (box[owner, 2] + local // span_x[owner]) * tiles_x + box[owner, 0] + local % span_x[owner]
    order = torch.argsort(tile_ids, stable=True)  # by tile; within a tile the depth order survives
    tile_ids, gaussians = tile_ids[order], visible[owner[order]]
    per_tile = torch.bincount(tile_ids, minlength=n_tiles)
    tile_start = torch.cumsum(per_tile, 0) - per_tile
    occupied = torch.nonzero(per_tile).squeeze(-1)
    occupied = occupied[torch.argsort(per_tile[occupied], stable=True)]
    counts = per_tile[occupied].tolist()
    offsets = torch.arange(n_pixels, device=device)
    local_xy = torch.stack([offsets % tile_size, offsets // tile_size], dim=-1).to(dtype) + 0.5
    done_tiles, colours, alphas = [], [], []
    first = 0
    while first < len(counts):  # ascending counts: a block's width is its last tile's count
        last = first + 1
        while last < len(counts) and (last + 1 - first) * n_pixels * counts[last] <= max_chunk_elements:
            last += 1
        block, width_k = occupied[first:last], counts[last - 1]
        slots = torch.arange(width_k, device=device)
        valid = slots[None, :] < per_tile[block][:, None]  # [T, K]
        ids = gaussians[(tile_start[block][:, None] + slots[None, :]).clamp_max(pairs - 1)]
        origin = torch.stack([block % tiles_x, block // tiles_x], dim=-1).to(dtype) * tile_size
        pixels = origin[:, None, :] + local_xy[None]  # [T, P, 2]
        colour, alpha = _composite_tiles(pixels, ids, valid, means2d, conics, opacities, values, absgrad_buffer,
                                         median)
        done_tiles.append(block)
        colours.append(colour)
        alphas.append(alpha)
        first = last
    done = torch.cat(done_tiles)
    colour = torch.zeros(n_tiles, n_pixels, D, device=device, dtype=dtype).index_copy(0, done, torch.cat(colours))
    alpha = torch.zeros(n_tiles, n_pixels, 1, device=device, dtype=dtype).index_copy(0, done, torch.cat(alphas))

    def to_image(tiled: Tensor) -> Tensor:
        grid = tiled.reshape(tiles_y, tiles_x, tile_size, tile_size, -1).permute(0, 2, 1, 3, 4)
        return grid.reshape(tiles_y * tile_size, tiles_x * tile_size, -1)[:height, :width]

    return to_image(colour), to_image(alpha)


def _composite_tiles(
    pixels: Tensor, ids: Tensor, valid: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, values: Tensor,
    absgrad_buffer: Optional[Tensor], median: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Pixel centres [T,P,2] of T tiles against each tile's depth-sorted Gaussians `ids` [T,K] (`valid` marks the
    real ones): (colour [T,P,D], alpha [T,P,1]); with `median`, the last channel is the median depth (the last value
    channel of the Gaussian at which the opacity reaches MEDIAN_OPACITY) times the alpha, where it does."""
    mu = means2d[ids][:, None].expand(-1, pixels.shape[1], -1, -1)  # [T, P, K, 2]
    if absgrad_buffer is not None and mu.requires_grad:
        mu.register_hook(_absgrad_hook(absgrad_buffer, ids))
    delta = pixels[:, :, None, :] - mu
    dx, dy = delta[..., 0], delta[..., 1]
    conic = conics[ids][:, None]  # [T, 1, K, 3]
    sigma = 0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) + conic[..., 1] * dx * dy
    a = torch.clamp(opacities[ids][:, None] * torch.exp(-sigma), max=ALPHA_MAX)
    use = valid[:, None, :] & (sigma >= 0) & (a >= ALPHA_MIN)
    a = torch.where(use, a, torch.zeros_like(a))
    after = torch.cumprod(1.0 - a, dim=-1)
    before = torch.cat([torch.ones_like(after[..., :1]), after[..., :-1]], dim=-1)
    weights = a * before * (after > TRANSMITTANCE_MIN).to(a.dtype)
    slot_values = values[ids]  # [T, K, D]
    colour = torch.einsum("tpk,tkd->tpd", weights, slot_values)
    alpha = weights.sum(dim=-1, keepdim=True)
    if median:
        crossed = after <= 1.0 - MEDIAN_OPACITY
        first = crossed.to(torch.int8).argmax(dim=-1, keepdim=True)  # the first Gaussian that crosses
        depth = torch.gather(slot_values[..., -1][:, None, :].expand_as(a), -1, first)
        colour = torch.cat([colour[..., :-1], torch.where(crossed.any(-1, keepdim=True), depth * alpha,
                                                           colour[..., -1:])], dim=-1)
    return colour, alpha


def _absgrad_hook(buffer: Tensor, ids: Tensor):
    """Backward hook adding |per-pixel gradient| of the 2D means into `buffer` (gsplat's absgrad)."""

    def hook(grad: Tensor) -> None:
        buffer.index_add_(0, ids.reshape(-1), grad.abs().sum(dim=1).reshape(-1, 2))

    return hook
