"""Orbit cameras and the novel-view curriculum, as pure functions.

World convention (written once, used everywhere): right-handed, +Z up, the object centred at the origin.
A camera on the orbit is named by azimuth (degrees from +X toward +Y), elevation (degrees above the XY plane),
radius and vertical field of view, and always looks at the origin. Camera-to-world matrices follow nerfstudio's
OpenGL convention: the camera looks down its -Z axis and +Y is up in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor

MAX_ABS_ELEVATION = 89.0
"""Elevations are clamped to this many degrees so that the look-at frame never degenerates at the poles."""


def orbit_pose(azimuth_deg: Tensor | float, elevation_deg: Tensor | float, radius: Tensor | float) -> Tensor:
    """Camera-to-world matrices (..., 3, 4) for cameras on the orbit looking at the origin with +Z up."""
    azimuth = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    elevation = torch.deg2rad(
        torch.as_tensor(elevation_deg, dtype=torch.float32).clamp(-MAX_ABS_ELEVATION, MAX_ABS_ELEVATION)
    )
    radius = torch.as_tensor(radius, dtype=torch.float32)
    azimuth, elevation, radius = torch.broadcast_tensors(azimuth, elevation, radius)
    backward = torch.stack(
        [torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)],
        dim=-1,
    )
    position = backward * radius[..., None]
    world_up = torch.tensor([0.0, 0.0, 1.0]).expand_as(backward)
    right = torch.nn.functional.normalize(torch.cross(world_up, backward, dim=-1), dim=-1)
    up = torch.cross(backward, right, dim=-1)
    return torch.stack([right, up, backward, position], dim=-1)


def focal_from_fov(fov_deg: Tensor | float, height: int) -> Tensor:
    """Focal length in pixels for a vertical field of view (degrees) over an image `height` pixels tall."""
    fov = torch.deg2rad(torch.as_tensor(fov_deg, dtype=torch.float32))
    return 0.5 * height / torch.tan(0.5 * fov)


def fov_from_focal(focal: Tensor | float, height: int) -> Tensor:
    """Vertical field of view (degrees) of a focal length in pixels over an image `height` pixels tall."""
    return torch.rad2deg(2.0 * torch.atan(0.5 * height / torch.as_tensor(focal, dtype=torch.float32)))


def wrap_degrees(angle: Tensor) -> Tensor:
    """Angles wrapped into [-180, 180)."""
    return torch.remainder(angle + 180.0, 360.0) - 180.0


@dataclass(frozen=True)
class ViewRanges:
    """Where novel cameras may be drawn at one training step (all angles in degrees)."""

    azimuth_half_width: float
    """Half the width of the azimuth window, centred on a reference azimuth; 180 is the full circle."""
    elevation: Tuple[float, float]
    """Elevation range, degrees above the XY plane."""
    radius: Tuple[float, float]
    """Distance range from the origin."""
    fov: Tuple[float, float]
    """Vertical field of view range."""


def curriculum_ranges(
    step: int,
    initial_azimuth_half_width: float,
    widen_steps: int,
    elevation: Tuple[float, float],
    radius: Tuple[float, float],
    fov: Tuple[float, float],
    widen_start: int = 0,
) -> ViewRanges:
    """The view ranges at `step`: the azimuth window grows linearly from its initial half width to the full circle
    between `widen_start` and `widen_start + widen_steps`; the other ranges are constant."""
    if widen_steps <= 0:
        progress = 1.0 if step >= widen_start else 0.0
    else:
        progress = min(max((step - widen_start) / widen_steps, 0.0), 1.0)
    half_width = initial_azimuth_half_width + progress * (180.0 - initial_azimuth_half_width)
    return ViewRanges(azimuth_half_width=half_width, elevation=elevation, radius=radius, fov=fov)


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def sample_views(
    ranges: ViewRanges, count: int, reference_azimuth: float | Sequence[float], generator: torch.Generator,
    uniform_sphere: bool = True,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Draw `count` views inside `ranges`: (azimuth, elevation, radius, fov), each a tensor of shape (count,).

    The azimuth window is centred on `reference_azimuth`; given several reference azimuths (several photos), each
    view's window is centred on one of them drawn uniformly (after the other draws, so that one reference draws
    exactly what a single azimuth does). With `uniform_sphere`, elevation is drawn so that directions are uniform
    over the sphere's band (uniform in sin(elevation)) rather than uniform in angle, which would crowd the poles.
    """
    centres = torch.as_tensor(reference_azimuth, dtype=torch.float32).reshape(-1)
    if centres.numel() == 0:
        raise ValueError("sample_views needs at least one reference azimuth")
    offset = _uniform(-ranges.azimuth_half_width, ranges.azimuth_half_width, count, generator)
    low, high = ranges.elevation
    if uniform_sphere:
        sin_low, sin_high = math.sin(math.radians(low)), math.sin(math.radians(high))
        elevation = torch.rad2deg(torch.asin(_uniform(sin_low, sin_high, count, generator)))
    else:
        elevation = _uniform(low, high, count, generator)
    radius = _uniform(*ranges.radius, count, generator)
    fov = _uniform(*ranges.fov, count, generator)
    if centres.numel() == 1:
        centre = centres.expand(count)
    else:
        centre = centres[torch.randint(centres.numel(), (count,), generator=generator)]
    return wrap_degrees(centre + offset), elevation, radius, fov


def pose_angles(camera_to_worlds: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Inverse of `orbit_pose` for the camera positions: (azimuth, elevation, radius) of (..., 3, 4) matrices."""
    position = camera_to_worlds[..., :3, 3]
    radius = position.norm(dim=-1)
    azimuth = torch.rad2deg(torch.atan2(position[..., 1], position[..., 0]))
    elevation = torch.rad2deg(torch.asin((position[..., 2] / radius.clamp_min(1e-8)).clamp(-1.0, 1.0)))
    return azimuth, elevation, radius


def orbit_cameras(
    azimuth: Tensor,
    elevation: Tensor,
    radius: Tensor,
    fov: Tensor,
    width: int,
    height: int,
    reference_azimuth: float = 0.0,
):
    """nerfstudio `Cameras` for a batch of orbit views. The reference azimuth travels in the cameras' metadata so
    that anything view-dependent (prompts, priors) can tell front from back without another argument."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    azimuth, elevation, radius, fov = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in
                                       (azimuth, elevation, radius, fov))
    focal = focal_from_fov(fov, height)[:, None]
    count = azimuth.shape[0]
    return Cameras(
        camera_to_worlds=orbit_pose(azimuth, elevation, radius),
        fx=focal,
        fy=focal.clone(),
        cx=torch.full((count, 1), width / 2.0),
        cy=torch.full((count, 1), height / 2.0),
        width=torch.full((count, 1), width, dtype=torch.long),
        height=torch.full((count, 1), height, dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
        metadata={"reference_azimuth": torch.full((count, 1), float(reference_azimuth))},
    )


def cameras_to_device(cameras, device: torch.device | str):
    """`cameras` on `device` without waiting on it: host-to-device copies are queued (non-blocking), where
    `Cameras.to` would make the host wait for each of its fields."""
    return cameras._apply_fn_to_fields(lambda tensor: tensor.to(device, non_blocking=True))  # pylint: disable=protected-access


def pinhole_ray_bundle(cameras, height: int, width: int):
    """Every pixel's ray of a batch of undistorted pinhole cameras at once, as a `RayBundle` of shape (B, H, W):
    the rays nerfstudio's `Cameras.generate_rays` gives camera by camera (pixel centres, the OpenGL convention,
    unit directions, the pixel area of the unit-direction footprint, `directions_norm` in the metadata), built with
    tensor operations only, so nothing waits on the device. `height` and `width` are the cameras' common size
    (passed in, because reading it from the cameras would wait on the device)."""
    from nerfstudio.cameras.rays import RayBundle

    c2w = cameras.camera_to_worlds.reshape(-1, 3, 4)
    count, device = c2w.shape[0], c2w.device
    fx, fy, cx, cy = (value.reshape(count, 1, 1) for value in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    rows = torch.arange(height, device=device, dtype=c2w.dtype).reshape(1, height, 1) + 0.5
    cols = torch.arange(width, device=device, dtype=c2w.dtype).reshape(1, 1, width) + 0.5

    def directions(x_offset: float, y_offset: float) -> Tuple[Tensor, Tensor]:
        x = ((cols + x_offset - cx) / fx).expand(count, height, width)
        y = (-(rows + y_offset - cy) / fy).expand(count, height, width)
        camera = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, H, W, 3)
        # An elementwise sum rather than a matrix product: the same bits whatever the batch size.
        world = (c2w[:, None, None, :3, :3] * camera[..., None, :]).sum(-1)
        norm = world.norm(dim=-1, keepdim=True)
        return world / norm, norm

    centre, norm = directions(0.0, 0.0)
    dx = (directions(1.0, 0.0)[0] - centre).norm(dim=-1, keepdim=True)
    dy = (directions(0.0, 1.0)[0] - centre).norm(dim=-1, keepdim=True)
    origins = c2w[:, None, None, :3, 3].expand(count, height, width, 3)
    indices = torch.arange(count, device=device).reshape(count, 1, 1, 1).expand(count, height, width, 1)
    return RayBundle(origins=origins, directions=centre, pixel_area=dx * dy, camera_indices=indices,
                     metadata={"directions_norm": norm.detach()})
