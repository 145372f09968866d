"""What the mesh stage reads from a finished model, through one small interface: renders (straight colour, opacity,
depth along the camera axis) at any cameras, the photo(s) with their cameras, the scene box, and for a coarse run
its density and albedo fields.

A coarse model (`CoarseModel`) and a refine model (`RefineSplatModel`, any `SplatfactoModel`) both render through
`get_outputs_for_camera`; the difference is the depth they report (distance along the ray, or z-depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor


@dataclass
class Views:
    """Renders of a model at some cameras (one resolution)."""

    cameras: object
    """nerfstudio Cameras of the renders (on the CPU)."""
    rgb: np.ndarray
    """(B, H, W, 3) straight (un-premultiplied) colour in [0, 1]."""
    alpha: np.ndarray
    """(B, H, W) opacity."""
    depth: np.ndarray
    """(B, H, W) depth along each camera's viewing axis."""


@dataclass
class Photo:
    """One photo the run was trained on, and its camera."""

    camera: object
    """nerfstudio Cameras of one camera, at the photo's resolution."""
    rgba: np.ndarray
    """(H, W, 4) straight-alpha colour in [0, 1]."""


def is_splat_model(model) -> bool:
    """Whether `model` is a SplatfactoModel (renders z-depth); False when gsplat is missing."""
    try:
        from nerfstudio.models.splatfacto import SplatfactoModel
    except ImportError:
        return False
    return isinstance(model, SplatfactoModel)


def axis_cosines(cameras, index: int) -> Tensor:
    """(H, W) cosine between each unit ray of camera `index` and its viewing axis (distance x cosine = z-depth)."""
    rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
    directions = torch.nn.functional.normalize(rays.directions, dim=-1)
    return (directions @ -cameras.camera_to_worlds[index, :3, 2]).clamp_min(1e-6)


class ModelSource:
    """A loaded run's pipeline as the mesh stage sees it."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.model = pipeline.model
        self.splat = is_splat_model(self.model)

    @property
    def aabb(self) -> np.ndarray:
        """(2, 3) scene box."""
        return self.model.scene_box.aabb.detach().cpu().numpy().astype(np.float32)

    @property
    def has_density(self) -> bool:
        """Whether the model is a density field (a coarse run) with an albedo."""
        return hasattr(self.model, "query_density") and hasattr(self.model, "query_albedo")

    def photos(self) -> List[Photo]:
        """Every photo of the run with its camera (the main one first)."""
        outputs = self.pipeline.datamanager.train_dataparser_outputs
        views = outputs.metadata.get("reference_views")
        if views:
            return [Photo(camera=view["camera"][0:1], rgba=np.asarray(view["rgba"], dtype=np.float32))
                    for view in views]
        return [Photo(camera=outputs.cameras[0:1], rgba=np.asarray(outputs.metadata["rgba"], dtype=np.float32))]

    def reference_camera(self):
        """The main photo's camera."""
        return self.photos()[0].camera

    def trained_elevations(self) -> Tuple[float, float]:
        """(lowest, highest) elevation in degrees the model was trained to be seen from: its novel views' band
        widened to take in every photo's camera; the whole sphere for a run without novel views."""
        from single_image_nerf.data.camera_sampling import pose_angles

        datamanager = getattr(getattr(self.pipeline, "config", None), "datamanager", None)
        band = getattr(getattr(datamanager, "novel_views", None), "elevation_range", None)
        if band is None:
            return (-90.0, 90.0)
        photos = [float(pose_angles(photo.camera.camera_to_worlds)[1].reshape(-1)[0]) for photo in self.photos()]
        return (min(float(band[0]), *photos), max(float(band[1]), *photos))

    @torch.no_grad()
    def render(self, cameras, progress: Optional[str] = None) -> Views:
        """Straight colour, opacity and z-depth of the model at each camera (eval mode for the call; the median
        depth where the model renders it, the depth of its opacity's half-way point as the silhouettes' edge is)."""
        from tqdm import tqdm

        model = self.model
        was_training = model.training
        switches = {"eval_normals": False, "eval_median_depth": True}  # colour, opacity and the surface's depth
        saved = {name: getattr(model, name) for name in switches if hasattr(model, name)}
        model.eval()
        for name in saved:
            setattr(model, name, switches[name])
        rgbs, alphas, depths = [], [], []
        try:
            for index in tqdm(range(cameras.shape[0]), desc=progress, disable=progress is None, leave=False):
                outputs = model.get_outputs_for_camera(cameras[index:index + 1].to(model.device))
                rgb = outputs["rgb"].float().cpu()
                alpha = outputs["accumulation"].float().cpu().reshape(rgb.shape[:2] + (1,))
                background = outputs.get("background")
                background = torch.ones(3) if background is None else background.float().cpu()
                background = background.reshape(3) if background.numel() == 3 else background.reshape(rgb.shape)
                straight = (rgb - (1.0 - alpha) * background) / alpha.clamp_min(1e-4)
                depth = outputs["depth"].float().cpu().reshape(rgb.shape[:2])
                if not self.splat:  # the coarse model reports distance along unit rays
                    depth = depth * axis_cosines(cameras, index)
                rgbs.append(straight.clamp(0.0, 1.0).numpy())
                alphas.append(alpha[..., 0].numpy())
                depths.append(depth.numpy())
        finally:
            model.train(was_training)
            for name, value in saved.items():
                setattr(model, name, value)
        return Views(cameras=cameras, rgb=np.stack(rgbs), alpha=np.stack(alphas), depth=np.stack(depths))


def sphere_cameras(reference, count: int, resolution: int, elevations: Tuple[float, float] = (-90.0, 90.0)):
    """`count` cameras on a Fibonacci spiral over the sphere (or its band of `elevations`, degrees), evenly spread
    over its area, all looking at the origin from the reference camera's radius with its field of view,
    `resolution` pixels square."""
    import math

    from single_image_nerf.data.camera_sampling import fov_from_focal, orbit_cameras, pose_angles

    azimuth0, _, radius = (float(value.reshape(-1)[0]) for value in pose_angles(reference.camera_to_worlds))
    fov = float(fov_from_focal(reference.fy.reshape(-1)[0], int(reference.height.reshape(-1)[0])))
    index = torch.arange(count, dtype=torch.float32) + 0.5
    low, high = (math.sin(math.radians(value)) for value in elevations)
    elevation = torch.rad2deg(torch.asin((high - (high - low) * index / count).clamp(-1.0, 1.0)))
    azimuth = azimuth0 + torch.remainder(index * 180.0 * (3.0 - math.sqrt(5.0)), 360.0)
    return orbit_cameras(azimuth, elevation, torch.full((count,), radius), torch.full((count,), fov),
                         resolution, resolution, reference_azimuth=azimuth0)


def project(cameras, index: int, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y; pixel centres at +0.5) and z-depth of world `points` (N, 3) in camera `index`
    (nerfstudio's OpenGL convention: the camera looks down its -Z, +Y up in the image)."""
    c2w = cameras.camera_to_worlds[index].detach().cpu().numpy().astype(np.float64)
    local = (points - c2w[:, 3]) @ c2w[:, :3]
    z = -local[:, 2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    fx, fy, cx, cy = (float(getattr(cameras, name)[index].reshape(-1)[0]) for name in ("fx", "fy", "cx", "cy"))
    return fx * local[:, 0] / safe + cx, cy - fy * local[:, 1] / safe, z
