"""Coarse field to Gaussian seeds, as pure functions over two field callables, plus a thin adapter for a model.

`nerf_to_gaussians`: points on the density level set, colours from the albedo field, scales from the distances to
their nearest neighbours. `reference_view_seeds` (Make-It-3D's textured point cloud): every foreground pixel of the
photo is carried along its ray onto the coarse surface and becomes a Gaussian of the photo's colour (with several
photos, each photo's pixels, the photo facing a surface more squarely keeping it where two see it); the rest of the
level set, hidden from every reference camera, is seeded from the field as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import math

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.refine.surface import (DensityGrid, FieldFn, ProgressFn, Surface, evaluate_grid,
                                              extract_surface, sample_surface)


@dataclass
class GaussianSeeds:
    """Initial Gaussians in world coordinates (activated values, not logits or logs)."""

    means: Tensor
    """(N, 3) centres."""
    colors: Tensor
    """(N, 3) colours in [0, 1]."""
    scales: Tensor
    """(N, 3) standard deviations along the Gaussian's axes (isotropic at seeding)."""
    opacities: Tensor
    """(N, 1) opacities in (0, 1)."""
    reference_visible: Optional[Tensor] = None
    """(N,) bool: True for the seeds that carry the photo's colour (seen by the reference camera); None: none do."""
    quats: Optional[Tensor] = None
    """(N, 4) unit rotations (w, x, y, z) of the Gaussians' axes; None: identity."""
    counts: Dict[str, int] = field(default_factory=dict)
    """How the seeds were split (reference-view seeds, hidden-surface seeds, foreground pixels the surface missed)."""

    def __len__(self) -> int:
        return self.means.shape[0]


def knn_scales(points: Tensor, k: int = 3, min_scale: float = 1e-4) -> Tensor:
    """(N, 3) isotropic scales: the mean distance of each point to its k nearest other points (splatfacto's rule)."""
    from scipy.spatial import cKDTree

    array = points.detach().cpu().numpy().astype(np.float64)
    k = max(1, min(k, array.shape[0] - 1))
    if array.shape[0] < 2:
        return torch.full((array.shape[0], 3), float(min_scale))
    distances, _ = cKDTree(array).query(array, k=k + 1)
    mean = np.maximum(distances[:, 1:].mean(axis=1), min_scale)
    return torch.from_numpy(mean).float()[:, None].expand(-1, 3).clone()


def nerf_to_gaussians(
    density_fn: FieldFn,
    albedo_fn: FieldFn,
    aabb: Tensor,
    level: float,
    num_points: int = 5000,
    resolution: int = 128,
    opacity: float = 0.5,
    k_neighbours: int = 3,
    scale_multiplier: float = 1.0,
    seed: int = 0,
    chunk: int = 1 << 16,
    progress: Optional[ProgressFn] = None,
) -> GaussianSeeds:
    """Seeds on the level set {density = level} of a field inside `aabb` (2, 3).

    The density is evaluated on a resolution^3 grid, its level set extracted by marching cubes, and `num_points`
    points drawn uniformly by area on it (reproducible from `seed`). Colours are `albedo_fn` at those points, scales
    `scale_multiplier` times the mean distance to the `k_neighbours` nearest seeds, and every opacity is `opacity`.
    Raises a one-line UserInputError when the density never crosses `level`.
    """
    grid = evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=progress)
    surface = extract_surface(grid, level)
    means = sample_surface(surface, num_points, torch.Generator().manual_seed(seed))
    colors = []
    with torch.no_grad():
        for start in range(0, means.shape[0], chunk):
            colors.append(albedo_fn(means[start:start + chunk]).float().cpu())
    return GaussianSeeds(
        means=means,
        colors=torch.cat(colors).clamp(0.0, 1.0),
        scales=knn_scales(means, k_neighbours) * scale_multiplier,
        opacities=torch.full((means.shape[0], 1), float(opacity)),
    )


def seeds_from_model(model, level: float, **kwargs) -> GaussianSeeds:
    """`nerf_to_gaussians` on a model exposing `query_density`, `query_albedo` and `scene_box` (the CoarseModel)."""
    was_training = model.training
    model.eval()
    try:
        return nerf_to_gaussians(model.query_density, model.query_albedo, model.scene_box.aabb.cpu(), level, **kwargs)
    finally:
        model.train(was_training)


@dataclass
class PinholeView:
    """One pinhole camera in nerfstudio's convention (OpenGL axes: it looks down its -Z, +Y up in the image; pixel
    centres at +0.5), as plain tensors."""

    camera_to_world: Tensor
    """(3, 4) camera-to-world matrix."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_cameras(cls, cameras) -> "PinholeView":
        """The first camera of a nerfstudio `Cameras`."""
        camera = cameras.reshape(-1)[0:1]
        return cls(camera.camera_to_worlds[0].detach().float().cpu(), float(camera.fx), float(camera.fy),
                   float(camera.cx), float(camera.cy), int(camera.width), int(camera.height))

    def pixel_rays(self) -> Tuple[Tensor, Tensor]:
        """(origin (3,), unit directions (H*W, 3)) through every pixel centre, row-major, as nerfstudio's
        `Cameras.generate_rays` builds them."""
        v, u = torch.meshgrid(torch.arange(self.height, dtype=torch.float32) + 0.5,
                              torch.arange(self.width, dtype=torch.float32) + 0.5, indexing="ij")
        local = torch.stack([(u - self.cx) / self.fx, -(v - self.cy) / self.fy, -torch.ones_like(u)], dim=-1)
        directions = local.reshape(-1, 3) @ self.camera_to_world[:, :3].T
        return self.camera_to_world[:, 3].clone(), torch.nn.functional.normalize(directions, dim=-1)

    def project(self, points: Tensor) -> Tuple[Tensor, Tensor]:
        """(pixel index (N,) into the row-major image, -1 outside it or behind the camera; distance from the camera
        centre (N,))."""
        offset = points - self.camera_to_world[:, 3]
        local = offset @ self.camera_to_world[:, :3]  # camera axes: x right, y up, z backward
        forward = -local[:, 2]
        ahead = forward > 1e-6
        u = self.fx * local[:, 0] / forward.clamp_min(1e-6) + self.cx
        v = -self.fy * local[:, 1] / forward.clamp_min(1e-6) + self.cy
        column, row = torch.floor(u).long(), torch.floor(v).long()
        inside = ahead & (column >= 0) & (column < self.width) & (row >= 0) & (row < self.height)
        return torch.where(inside, row * self.width + column, torch.full_like(row, -1)), offset.norm(dim=-1)


def _march(grid: DensityGrid, origin: Tensor, directions: Tensor, step: Optional[float], chunk: int,
           max_distance: Optional[float] = None):
    """Yield (ray slice, distances (n, S), trilinear grid densities (n, S), zero past the box) for chunks of unit
    rays marched through the grid's box at `step` (half the finest voxel side by default), and the step. `origin` is
    one point (3,) for every ray or one per ray (N, 3); `max_distance` stops the rays there."""
    values = torch.from_numpy(np.nan_to_num(grid.values, nan=0.0)).float()
    volume = values.permute(2, 1, 0)[None, None]  # grid_sample reads (z, y, x) with x the fastest axis
    low, high = torch.from_numpy(grid.aabb[0]).float(), torch.from_numpy(grid.aabb[1]).float()
    step = float(step if step is not None else 0.5 * grid.spacing.min())
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (low - origin) / safe, (high - origin) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    if max_distance is not None:
        far = far.clamp_max(float(max_distance))
    steps = int(math.ceil(float((far - near).clamp_min(0).max()) / step)) + 2 if directions.shape[0] else 0
    if steps <= 2:
        return
    offsets = torch.arange(steps, dtype=torch.float32) * step
    rays_per_chunk = max(1, chunk // steps)
    for start in range(0, directions.shape[0], rays_per_chunk):
        d, n, f = (x[start:start + rays_per_chunk] for x in (directions, near, far))
        t = n[:, None] + offsets[None, :]
        o = origin[start:start + rays_per_chunk, None, :] if origin.dim() == 2 else origin
        points = o + t[..., None] * d[:, None, :]
        normalised = (points - low) / (high - low) * 2.0 - 1.0
        density = torch.nn.functional.grid_sample(volume, normalised[None, :, :, None, :], mode="bilinear",
                                                  padding_mode="zeros", align_corners=True)[0, 0, :, :, 0]
        density = torch.where(t <= f[:, None], density, torch.zeros_like(density))
        yield slice(start, start + rays_per_chunk), t, density, step


@dataclass
class RayDepths:
    """What one march of unit rays through the trilinear grid density finds, each (N,)."""

    crossing: Tensor
    """Distance to where the density first reaches the level (linear between the two samples around it); inf where
    the ray never does inside the grid's box."""
    peak_distance: Tensor
    """Distance to the ray's densest sample; inf where the ray meets no density."""
    peak_density: Tensor
    """That density (0 where the ray misses the box)."""
    expected: Optional[Tensor] = None
    """Expected termination distance (`expected_termination`), when asked for."""
    accumulation: Optional[Tensor] = None
    """Its accumulated opacity, when asked for."""


def _crossing(t: Tensor, density: Tensor, step: float, level: float) -> Tensor:
    """First-crossing distances of one marched chunk (see `RayDepths.crossing`)."""
    above = density >= level
    found = above.any(dim=1)
    index = above.float().argmax(dim=1)
    before = (index - 1).clamp_min(0)
    d1 = density.gather(1, index[:, None])[:, 0]
    d0 = density.gather(1, before[:, None])[:, 0]
    fraction = torch.where((index > 0) & (d1 > d0), (level - d0) / (d1 - d0).clamp_min(1e-12),
                           torch.zeros_like(d0)).clamp(0.0, 1.0)
    distance = t.gather(1, before[:, None])[:, 0] + torch.where(index > 0, fraction * step, torch.zeros_like(d0))
    return torch.where(found, distance, torch.full_like(distance, float("inf")))


def _termination(t: Tensor, density: Tensor, step: float) -> Tuple[Tensor, Tensor]:
    """(expected distance, accumulation) of one marched chunk (see `expected_termination`)."""
    alpha = 1.0 - torch.exp(-density.clamp_min(0.0) * step)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=1), dim=1)
    weights = transmittance * alpha
    total = weights.sum(dim=1)
    expected = torch.where(total >= 1e-6, (weights * t).sum(dim=1) / total.clamp_min(1e-12),
                           torch.full_like(total, float("inf")))
    return expected, total


def march_depths(grid: DensityGrid, origin: Tensor, directions: Tensor, level: float, expected: bool = False,
                 step: Optional[float] = None, chunk: int = 1 << 22) -> RayDepths:
    """First crossings of `level`, densest samples and, with `expected`, expected terminations of unit rays, all
    from one march through the grid."""
    crossing = torch.full((directions.shape[0],), float("inf"))
    depths = RayDepths(crossing, torch.full_like(crossing, float("inf")), torch.zeros_like(crossing),
                       torch.full_like(crossing, float("inf")) if expected else None,
                       torch.zeros_like(crossing) if expected else None)
    for rays, t, density, step in _march(grid, origin, directions, step, chunk):
        depths.crossing[rays] = _crossing(t, density, step, level)
        peak, peak_index = density.max(dim=1)
        depths.peak_density[rays] = peak
        depths.peak_distance[rays] = torch.where(peak > 0, t.gather(1, peak_index[:, None])[:, 0],
                                                 torch.full_like(peak, float("inf")))
        if expected:
            depths.expected[rays], depths.accumulation[rays] = _termination(t, density, step)
    return depths


def first_crossing(grid: DensityGrid, origin: Tensor, directions: Tensor, level: float, step: Optional[float] = None,
                   chunk: int = 1 << 22) -> Tensor:
    """Distance along each unit ray (N,) to where the trilinearly interpolated grid density first reaches `level`
    (linear between the two samples around it); inf where the ray never does inside the grid's box."""
    return march_depths(grid, origin, directions, level, step=step, chunk=chunk).crossing


def expected_termination(grid: DensityGrid, origin: Tensor, directions: Tensor, step: Optional[float] = None,
                         chunk: int = 1 << 22, max_distance: Optional[float] = None) -> Tuple[Tensor, Tensor]:
    """(expected distance, accumulation), each (N,), of unit rays (from one `origin` (3,) or one each (N, 3), up to
    `max_distance`) volume-rendered through the trilinear grid density: weights w_i = T_i (1 - exp(-density_i step))
    and distance sum(w_i t_i) / sum(w_i), as a NeRF's "expected" depth output; inf where the accumulation is below
    1e-6."""
    expected = torch.full((directions.shape[0],), float("inf"))
    accumulation = torch.zeros_like(expected)
    for rays, t, density, step in _march(grid, origin, directions, step, chunk, max_distance):
        expected[rays], accumulation[rays] = _termination(t, density, step)
    return expected, accumulation


def settle_on_rendered_surface(grid: DensityGrid, points: Tensor, normals: Tensor, search: float,
                               min_accumulation: float = 0.5) -> Tensor:
    """`points` (N, 3) moved along their outward unit `normals` to where a render of the density sees the surface:
    the expected termination of a ray cast inward from `search` outside each point, over 2 `search`. A level set
    of the density lies outside that surface (the density rises before the render's weights peak); a point whose
    ray gathers less than `min_accumulation` stays where it was."""
    if points.shape[0] == 0:
        return points
    origins = points + search * normals
    distance, accumulation = expected_termination(grid, origins, -normals, max_distance=2.0 * search)
    settled = (accumulation >= min_accumulation) & torch.isfinite(distance)
    return torch.where(settled[:, None], origins - distance.nan_to_num(0.0, 0.0, 0.0)[:, None] * normals, points)


def fill_missed_depths(distance: Tensor, foreground: Tensor, peak_distance: Tensor, peak_density: Tensor,
                       level: float, height: int, width: int, peak_fraction: float = 0.01) -> Tensor:
    """A distance for every foreground pixel (row-major (H*W,)): the first crossing where its ray has one; else the
    ray's densest sample when that reaches `peak_fraction` of the level (a ray that grazes a coarse surface smaller
    than the photo's silhouette passes closest to it there); else the first crossing of the nearest pixel (in the
    image) whose ray has one. Background pixels keep `distance`. All inf if no ray crosses the level set."""
    filled = distance.clone()
    missed = foreground & ~torch.isfinite(distance)
    near_peak = missed & (peak_density >= peak_fraction * level) & torch.isfinite(peak_distance)
    filled[near_peak] = peak_distance[near_peak]
    rest = missed & ~near_peak
    crossed = torch.isfinite(distance)
    if bool(rest.any()) and bool(crossed.any()):
        from scipy.ndimage import distance_transform_edt

        empty = (~crossed).reshape(height, width).numpy()
        _, (rows, columns) = distance_transform_edt(empty, return_indices=True)
        nearest = torch.from_numpy((rows * width + columns).reshape(-1)).long()
        filled[rest] = distance[nearest[rest]]
    return filled


def grid_normals(grid: DensityGrid, points: Tensor) -> Tensor:
    """(N, 3) outward unit normals of the level sets at `points`: minus the trilinearly interpolated gradient of the
    grid's density (central differences), normalised; +Z where the gradient vanishes."""
    values = np.nan_to_num(grid.values, nan=0.0).astype(np.float32)
    gradient = np.stack(np.gradient(values, *grid.spacing.tolist()), axis=0)  # (3, R, R, R), [axis, x, y, z]
    volume = torch.from_numpy(gradient).permute(0, 3, 2, 1)[None]  # grid_sample reads (z, y, x)
    low, high = torch.from_numpy(grid.aabb[0]).float(), torch.from_numpy(grid.aabb[1]).float()
    normalised = (points - low) / (high - low) * 2.0 - 1.0
    sampled = torch.nn.functional.grid_sample(volume, normalised[None, :, None, None, :], mode="bilinear",
                                              padding_mode="border", align_corners=True)[0, :, :, 0, 0].T
    outward = -sampled
    length = outward.norm(dim=-1, keepdim=True)
    return torch.where(length > 1e-12, outward / length.clamp_min(1e-12), torch.tensor([0.0, 0.0, 1.0]))


def quats_from_z_axes(axes: Tensor) -> Tensor:
    """(N, 4) unit quaternions (w, x, y, z) of the shortest rotations taking +Z onto each unit vector of `axes`."""
    w = 1.0 + axes[:, 2]
    quats = torch.stack([w, -axes[:, 1], axes[:, 0], torch.zeros_like(w)], dim=-1)
    opposite = w < 1e-6  # -Z: half a turn about X
    quats[opposite] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return torch.nn.functional.normalize(quats, dim=-1)


def hidden_from_view(points: Tensor, view: PinholeView, reference_distance: Tensor, tolerance: float) -> Tensor:
    """(N,) True for the `points` the reference camera does not see: those that project outside its image or lie
    more than `tolerance` behind the surface that their pixel's ray, or a neighbouring pixel's, meets first
    (`reference_distance`, (H*W,), inf where a ray meets nothing)."""
    image = reference_distance.reshape(1, 1, view.height, view.width)
    finite = torch.where(torch.isfinite(image), image, torch.full_like(image, -float("inf")))
    # The farthest first crossing among the pixel and its 8 neighbours: a grazing surface changes depth by more than
    # the tolerance within one pixel, and its samples must not pass for hidden.
    farthest = torch.nn.functional.max_pool2d(finite, 3, stride=1, padding=1).reshape(-1)
    reference_distance = torch.where(torch.isfinite(farthest), farthest, reference_distance)
    pixel, distance = view.project(points)
    first = torch.where(pixel >= 0, reference_distance[pixel.clamp_min(0)], torch.full_like(distance, -1.0))
    return (pixel < 0) | (distance > first + tolerance)


def hidden_from_every_view(points: Tensor, views: Sequence[Tuple[PinholeView, Tensor]], tolerance: float) -> Tensor:
    """(N,) True for the `points` that no reference camera sees (`hidden_from_view` for each (view, its per-pixel
    first-surface distances) of `views`)."""
    hidden = torch.ones(points.shape[0], dtype=torch.bool)
    for view, reference_distance in views:
        hidden &= hidden_from_view(points, view, reference_distance, tolerance)
    return hidden


def hidden_surface_points(surface: Surface, count: int, views: Sequence[Tuple[PinholeView, Tensor]], tolerance: float,
                          generator: torch.Generator, rounds: int = 8) -> Tensor:
    """`count` points (or fewer, if the hidden surface is too small to find them in `rounds` draws) spread uniformly
    by area over the part of `surface` that no reference camera sees (`hidden_from_every_view`)."""
    kept, found = [], 0
    for _ in range(rounds):
        candidates = sample_surface(surface, max(2 * count, 1024), generator)
        hidden = hidden_from_every_view(candidates, views, tolerance)
        kept.append(candidates[hidden])
        found += int(hidden.sum())
        if found >= count:
            break
    return torch.cat(kept)[:count]


@dataclass
class PhotoPixelSeeds:
    """One reference view's foreground pixels carried onto the coarse surface (`photo_pixel_seeds`)."""

    view: PinholeView
    """The view's camera."""
    means: Tensor
    """(P, 3) where each chosen pixel's seed sits."""
    colors: Tensor
    """(P, 3) the pixels' colours."""
    scales: Tensor
    """(P, 3) isotropic scales: `reference_scale` pixels at the seed's depth."""
    distance: Tensor
    """(H*W,) distance along every pixel's ray to its seed (background pixels: the first crossing), inf where none:
    what this camera sees first, for the visibility tests."""
    foreground: Tensor
    """(H*W,) bool: the photo's foreground (alpha above 0.5)."""
    counts: Dict[str, int]
    """Foreground pixels, those whose ray missed the coarse level set, and those of them seeded all the same."""


def photo_pixel_seeds(grid: DensityGrid, level: float, rgba: Tensor, view: PinholeView,
                      reference_depth: Literal["level-set", "expected"], reference_scale: float,
                      max_reference_points: int, generator: torch.Generator) -> PhotoPixelSeeds:
    """One seed per foreground pixel of `rgba` (H, W, 4) seen through `view` (see `reference_view_seeds`)."""
    rgba = torch.as_tensor(rgba, dtype=torch.float32).cpu()
    if tuple(rgba.shape[:2]) != (view.height, view.width):
        raise ValueError(f"reference image {tuple(rgba.shape[:2])} does not match the camera "
                         f"({view.height}, {view.width})")
    origin, directions = view.pixel_rays()
    depths = march_depths(grid, origin, directions, level, expected=reference_depth == "expected")
    distance = depths.crossing
    foreground = rgba.reshape(-1, 4)[:, 3] > 0.5
    missed = foreground & ~torch.isfinite(distance)
    # Every foreground pixel gets one seed: where its ray misses the coarse level set (a coarse silhouette smaller
    # than the photo's), at the ray's densest sample or at the nearest crossing pixel's distance.
    seed_distance = fill_missed_depths(distance, foreground, depths.peak_distance, depths.peak_density, level,
                                       view.height, view.width)
    if depths.expected is not None:
        # Where the coarse render puts each pixel's depth; a ray that meets no density keeps the fallback above.
        use = foreground & torch.isfinite(depths.expected)
        seed_distance = torch.where(use, depths.expected, seed_distance)
    chosen = torch.nonzero(foreground & torch.isfinite(seed_distance)).squeeze(-1)
    if 0 < max_reference_points < chosen.numel():
        chosen = chosen[torch.randperm(chosen.numel(), generator=generator)[:max_reference_points].sort().values]
    means = origin + seed_distance[chosen, None] * directions[chosen]
    forward = -(directions[chosen] @ view.camera_to_world[:, 2])  # cosine to the optical axis: depth = t cos
    scales = (reference_scale * seed_distance[chosen] * forward / view.fx).clamp_min(1e-6)[:, None].expand(-1, 3)
    return PhotoPixelSeeds(view=view, means=means, colors=rgba.reshape(-1, 4)[chosen, :3], scales=scales,
                           distance=seed_distance, foreground=foreground,
                           counts={"foreground_pixels": int(foreground.sum()), "missed_pixels": int(missed.sum()),
                                   "filled_pixels": int((missed & torch.isfinite(seed_distance)).sum())})


def facing(points: Tensor, normals: Tensor, view: PinholeView) -> Tensor:
    """(N,) cosine between each point's outward unit normal and the direction from it to the camera of `view`."""
    return (normals * torch.nn.functional.normalize(view.camera_to_world[:, 3] - points, dim=-1)).sum(dim=-1)


def seen_on_photo(points: Tensor, photo: PhotoPixelSeeds, tolerance: float) -> Tensor:
    """(N,) True for the `points` that `photo` seeds too: they project onto its foreground, within `tolerance` of
    the distance its own seeds sit at there or at a neighbouring pixel (a grazing surface changes depth by more than
    the tolerance within one pixel)."""
    view = photo.view
    image = photo.distance.masked_fill(~photo.foreground, float("nan")).reshape(1, 1, view.height, view.width)
    farthest = torch.nn.functional.max_pool2d(image.nan_to_num(-float("inf"), -float("inf"), -float("inf")), 3,
                                              stride=1, padding=1).reshape(-1)
    nearest = -torch.nn.functional.max_pool2d(-image.nan_to_num(float("inf"), float("inf"), float("inf")), 3,
                                              stride=1, padding=1).reshape(-1)
    pixel, distance = view.project(points)
    inside = pixel >= 0
    index = pixel.clamp_min(0)
    return (inside & photo.foreground[index] & (distance >= nearest[index] - tolerance)
            & (distance <= farthest[index] + tolerance))


def frontal_owners(grid: DensityGrid, photos: Sequence[PhotoPixelSeeds], tolerance: float) -> List[Tensor]:
    """For each photo's seeds, (P,) True where it keeps them: where another photo seeds the same surface
    (`seen_on_photo`), the one that faces it more squarely (`facing`, about the surface's normal there) wins, the
    earlier photo on a tie. One photo keeps every seed."""
    kept = []
    for index, photo in enumerate(photos):
        keep = torch.ones(photo.means.shape[0], dtype=torch.bool)
        if len(photos) > 1 and photo.means.shape[0]:
            normals = grid_normals(grid, photo.means)
            own = facing(photo.means, normals, photo.view)
            for other_index, other in enumerate(photos):
                if other_index == index:
                    continue
                other_facing = facing(photo.means, normals, other.view)
                better = (other_facing > own) | ((other_facing == own) & (other_index < index))
                keep &= ~(better & seen_on_photo(photo.means, other, tolerance))
        kept.append(keep)
    return kept


def reference_view_seeds(
    density_fn: FieldFn,
    albedo_fn: FieldFn,
    aabb: Tensor,
    level: float,
    rgba: Tensor,
    view: PinholeView,
    num_hidden_points: int = 5000,
    max_reference_points: int = 0,
    resolution: int = 128,
    opacity: float = 0.5,
    reference_opacity: float = 0.99,
    reference_scale: float = 0.5,
    visibility_tolerance: float = 0.03,
    hidden_flatness: float = 0.1,
    reference_depth: Literal["level-set", "expected"] = "expected",
    hidden_depth: Literal["level-set", "expected"] = "expected",
    surface_search: float = 0.05,
    k_neighbours: int = 3,
    scale_multiplier: float = 1.0,
    seed: int = 0,
    chunk: int = 1 << 16,
    progress: Optional[ProgressFn] = None,
    other_views: Sequence[Tuple[Tensor, PinholeView]] = (),
) -> GaussianSeeds:
    """Seeds that keep the photos: first one per foreground pixel of `rgba` (H, W, 4; alpha above 0.5) seen through
    `view`, at the ray's expected termination distance through the density (where a render puts the pixel's depth;
    with `reference_depth` "level-set", at its first crossing of {density = level}), with the pixel's colour, opacity
    `reference_opacity` and an isotropic scale of `reference_scale` pixels at its depth (`max_reference_points` > 0
    keeps an evenly drawn subset of at most that many per photo); the same for each further photo of `other_views`
    ((rgba, view) pairs), where two photos seed the same surface the one facing it more squarely keeping its seeds
    (`frontal_owners`); then `num_hidden_points` drawn on the rest of the level set, which no reference camera sees
    (`hidden_surface_points`), each moved along its normal onto the rendered surface (`settle_on_rendered_surface`
    within `surface_search`; with `hidden_depth` "level-set", left on the level set), coloured by `albedo_fn` there
    and sized as `nerf_to_gaussians` does. `reference_visible` marks the photos' seeds; `counts` records the split."""
    for name, value in (("reference_depth", reference_depth), ("hidden_depth", hidden_depth)):
        if value not in ("level-set", "expected"):
            raise ValueError(f"{name} must be 'level-set' or 'expected', not {value!r}")
    grid = evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=progress)
    surface = extract_surface(grid, level)
    generator = torch.Generator().manual_seed(seed)
    photos = [photo_pixel_seeds(grid, level, image, camera, reference_depth, reference_scale, max_reference_points,
                                generator) for image, camera in [(rgba, view), *other_views]]
    owned = frontal_owners(grid, photos, visibility_tolerance)
    front = torch.cat([photo.means[keep] for photo, keep in zip(photos, owned)])
    seen = [(photo.view, photo.distance) for photo in photos]
    back = hidden_surface_points(surface, num_hidden_points, seen, visibility_tolerance, generator) \
        if num_hidden_points > 0 else torch.zeros(0, 3)
    back_normals = grid_normals(grid, back) if back.shape[0] else torch.zeros(0, 3)
    if hidden_depth == "expected":  # where no longer hidden once moved, a point stays on the level set
        settled = settle_on_rendered_surface(grid, back, back_normals, surface_search)
        still_hidden = hidden_from_every_view(settled, seen, visibility_tolerance)
        back = torch.where(still_hidden[:, None], settled, back)
    colours = []
    with torch.no_grad():
        for start in range(0, back.shape[0], chunk):
            colours.append(albedo_fn(back[start:start + chunk]).float().cpu())
    back_colours = torch.cat(colours) if colours else torch.zeros(0, 3)
    back_scales = knn_scales(back, k_neighbours) * scale_multiplier if back.shape[0] else torch.zeros(0, 3)
    # Hidden seeds are discs in the surface's tangent plane (`hidden_flatness` times as thick as wide): the reference
    # camera sees the surface at its silhouette edge-on, so a disc there does not spill over the photo's outline.
    back_quats = quats_from_z_axes(back_normals) if back.shape[0] else torch.zeros(0, 4)
    back_scales = back_scales * torch.tensor([1.0, 1.0, float(hidden_flatness)])
    count_front, count_back = front.shape[0], back.shape[0]
    front_quats = torch.zeros(count_front, 4)
    front_quats[:, 0] = 1.0
    counts = {"reference": count_front, "hidden": count_back}
    for key in ("foreground_pixels", "missed_pixels", "filled_pixels"):
        counts[key] = sum(photo.counts[key] for photo in photos)
    counts["overlap_pixels"] = sum(int((~keep).sum()) for keep in owned)  # left to a photo facing them more squarely
    return GaussianSeeds(
        means=torch.cat([front, back]).float(),
        colors=torch.cat([*(photo.colors[keep] for photo, keep in zip(photos, owned)), back_colours.clamp(0.0, 1.0)]),
        scales=torch.cat([*(photo.scales[keep].float() for photo, keep in zip(photos, owned)), back_scales.float()]),
        quats=torch.cat([front_quats, back_quats]),
        opacities=torch.cat([torch.full((count_front, 1), float(reference_opacity)),
                             torch.full((count_back, 1), float(opacity))]),
        reference_visible=torch.cat([torch.ones(count_front, dtype=torch.bool), torch.zeros(count_back, dtype=torch.bool)]),
        counts=counts,
    )


def reference_seeds_from_model(model, level: float, rgba: Tensor, view: PinholeView, **kwargs) -> GaussianSeeds:
    """`reference_view_seeds` on a model exposing `query_density`, `query_albedo` and `scene_box` (the CoarseModel)."""
    was_training = model.training
    model.eval()
    try:
        return reference_view_seeds(model.query_density, model.query_albedo, model.scene_box.aabb.cpu(), level, rgba,
                                    view, **kwargs)
    finally:
        model.train(was_training)
