"""Per-pixel triangle ids, barycentric coordinates and hit distances of a mesh seen by cameras, by open3d's ray
casting (BVH on the CPU): no rasteriser. Found once per view, they make the texture lookup of a render a plain,
differentiable `grid_sample` (textured.lookup).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MISS = -1
"""Face id of a ray that hits nothing."""


@dataclass
class Hits:
    """What each ray of one camera hits."""

    face_ids: np.ndarray
    """(H, W) triangle index, MISS where the ray hits nothing."""
    weights: np.ndarray
    """(H, W, 3) barycentric weights of the triangle's three vertices."""
    distance: np.ndarray
    """(H, W) distance from the camera along the unit ray (inf on a miss)."""
    origins: np.ndarray
    """(H, W, 3) ray origins."""
    directions: np.ndarray
    """(H, W, 3) unit ray directions."""


class Raycaster:
    """open3d's RaycastingScene over one triangle mesh."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        import open3d as o3d  # pylint: disable=import-outside-toplevel

        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                                 o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))

    def cast_rays(self, origins: np.ndarray, directions: np.ndarray):
        """(face ids, barycentric weights, distances) of rays (..., 3) with unit directions."""
        import open3d as o3d  # pylint: disable=import-outside-toplevel

        shape = origins.shape[:-1]
        rays = np.concatenate([origins, directions], axis=-1).reshape(-1, 6).astype(np.float32)
        result = self.scene.cast_rays(o3d.core.Tensor(rays))
        face_ids = result["primitive_ids"].numpy().astype(np.int64)
        hit = face_ids != np.iinfo(np.uint32).max
        face_ids = np.where(hit, face_ids, MISS)
        uv = result["primitive_uvs"].numpy().astype(np.float64)
        weights = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=-1)
        distance = np.where(hit, result["t_hit"].numpy().astype(np.float64), np.inf)
        return face_ids.reshape(shape), weights.reshape(shape + (3,)), distance.reshape(shape)

    def cast(self, cameras, index: int) -> Hits:
        """The hits of every pixel centre of camera `index` of nerfstudio `cameras`."""
        rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
        origins = rays.origins.detach().cpu().numpy().astype(np.float64)
        directions = torch.nn.functional.normalize(rays.directions, dim=-1).detach().cpu().numpy().astype(np.float64)
        face_ids, weights, distance = self.cast_rays(origins, directions)
        return Hits(face_ids=face_ids, weights=weights, distance=distance, origins=origins, directions=directions)
