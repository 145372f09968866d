"""A mesh (read from a file) rendered like a model: ray casting for each pixel's triangle and barycentrics, then the
texture lookup (or the vertex colours) there, antialiased by several rays per pixel. `sin-evaluate --mesh` scores a
mesh through it exactly as it scores a run's model (`get_outputs_for_camera`)."""

from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.mesh.raycast import MISS, Raycaster
from single_image_nerf.mesh.textured import lookup

ANTIALIAS = 4
"""Rays per pixel side (4 x 4 rays, box-filtered): a rasteriser's multisampling, as the photo's pixels average."""
MAX_RAYS = 1 << 22
"""Rays of one render at most: a camera already this large (a caller's own supersampling) gets fewer rays per
pixel, so that memory stays bounded (open3d and nerfstudio's ray generation hold several arrays per ray)."""


def mesh_colours(mesh) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """(per-vertex uvs, texture (S, S, 3) in [0, 1], per-vertex colours (V, 3) in [0, 1]) of a trimesh: a texture
    when it has one, else vertex colours, else None everywhere (drawn grey)."""
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            return np.asarray(visual.uv, dtype=np.float32), texture, None
    if getattr(visual, "kind", None) == "vertex":
        return None, None, np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    return None, None, None


class MeshRenderer(torch.nn.Module):
    """A textured or vertex-coloured trimesh (world axes) with a model's `get_outputs_for_camera`."""

    def __init__(self, mesh, antialias: int = ANTIALIAS, background=(1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.vertices = np.asarray(mesh.vertices, dtype=np.float64)
        self.faces = np.asarray(mesh.faces, dtype=np.int64)
        self.uvs, texture, self.colours = mesh_colours(mesh)
        self.texture = None if texture is None else torch.from_numpy(texture)
        self.raycaster = Raycaster(self.vertices, self.faces)
        self.antialias = antialias
        self.background = torch.tensor(background, dtype=torch.float32)

    @property
    def device(self) -> torch.device:
        """Renders are made on the CPU."""
        return torch.device("cpu")

    def surface_colours(self, face_ids: np.ndarray, weights: np.ndarray) -> Tensor:
        """(K, 3) colours at barycentric `weights` of `face_ids`."""
        corners = self.faces[face_ids]
        if self.texture is not None:
            uvs = np.einsum("kj,kjd->kd", weights, self.uvs[corners].astype(np.float64))
            return lookup(self.texture, torch.from_numpy(uvs).float())
        if self.colours is not None:
            return torch.from_numpy(np.einsum("kj,kjd->kd", weights, self.colours[corners])).float()
        return torch.full((face_ids.shape[0], 3), 0.7)

    @torch.no_grad()
    def get_outputs_for_camera(self, camera) -> Dict[str, Tensor]:
        """"rgb" (H, W, 3) over the background, "accumulation" (H, W, 1), "depth" (H, W, 1) (distance along unit
        rays, mean over the pixel's rays that hit) and "background" (3,)."""
        camera = copy.deepcopy(camera.to("cpu"))
        pixels = int(camera.height.reshape(-1)[0]) * int(camera.width.reshape(-1)[0])
        factor = max(1, min(self.antialias, int((MAX_RAYS / pixels) ** 0.5)))
        if factor > 1:
            camera.rescale_output_resolution(factor)
        hits = self.raycaster.cast(camera, 0)
        hit = hits.face_ids != MISS
        height, width = hit.shape
        rgb = self.background.expand(height, width, 3).clone()
        rgb[torch.from_numpy(hit)] = self.surface_colours(hits.face_ids[hit], hits.weights[hit])
        alpha = torch.from_numpy(hit.astype(np.float32))[..., None]
        distance = torch.from_numpy(np.where(hit, hits.distance, 0.0).astype(np.float32))[..., None]

        def pool(image: Tensor) -> Tensor:
            return torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], factor)[0].permute(1, 2, 0)

        coverage = pool(alpha) if factor > 1 else alpha
        depth = pool(distance) / coverage.clamp_min(1e-6) if factor > 1 else distance
        return {"rgb": pool(rgb) if factor > 1 else rgb, "accumulation": coverage, "depth": depth,
                "background": self.background}
