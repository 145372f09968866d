"""A triangle mesh with a UV texture, in the project's world (+Z up), and its differentiable texture lookup."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class TexturedMesh:
    """Vertices, faces, per-vertex UVs and a square colour texture."""

    vertices: np.ndarray
    """(V, 3) float positions, world coordinates."""
    faces: np.ndarray
    """(F, 3) int vertex indices, counter-clockwise seen from outside."""
    uvs: np.ndarray
    """(V, 2) texture coordinates in [0, 1] (v up)."""
    texture: np.ndarray
    """(S, S, 3) float colours in [0, 1], row 0 at v = 1."""

    def face_uvs(self, face_ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """UVs (K, 2) at barycentric `weights` (K, 3) of the faces `face_ids` (K,)."""
        return np.einsum("kj,kjd->kd", weights, self.uvs[self.faces[face_ids]].astype(np.float64))

    def vertex_colours(self) -> np.ndarray:
        """(V, 3) colours in [0, 1]: the texture at each vertex's UV."""
        return lookup(torch.from_numpy(self.texture).float(), torch.from_numpy(self.uvs).float()).numpy()


def lookup(texture: Tensor, uvs: Tensor) -> Tensor:
    """Bilinear texture lookup, differentiable in `texture`: (S, S, 3) texture at (N, 2) uvs -> (N, 3).

    u runs left to right and v bottom to top, so v = 1 is the image's first row (grid_sample's y = -1)."""
    grid = torch.stack([uvs[:, 0] * 2.0 - 1.0, 1.0 - uvs[:, 1] * 2.0], dim=-1).reshape(1, 1, -1, 2)
    image = texture.permute(2, 0, 1)[None]
    sampled = torch.nn.functional.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                                              align_corners=False)
    return sampled[0, :, 0].T
