"""A short fit of the texture over fixed geometry, against the photo(s) and the finished model's renders.

Each target pixel's triangle and barycentric coordinates are found once by ray casting (raycast.py), so its UV is
fixed; each step looks the texture up there with `grid_sample` (textured.lookup) and takes an Adam step on the
squared colour error. No rasteriser: it runs wherever torch runs.
"""

from __future__ import annotations

from typing import Callable, List

import numpy as np
import torch

from single_image_nerf.mesh.raycast import MISS, Raycaster
from single_image_nerf.mesh.source import Photo, Views
from single_image_nerf.mesh.textured import TexturedMesh, lookup

LEARNING_RATE = 0.01
"""Adam's step on texel colours in [0, 1] (a hundredth of the range)."""
PIXELS_PER_STEP = 1 << 16
"""Target pixels drawn per step."""
PHOTO_WEIGHT = 4.0
"""A photo pixel counts this many render pixels: the photo is the truth, the renders an estimate."""
SURFACE_ALPHA = 0.5
"""Target pixels whose opacity exceeds this are fitted."""


def targets(mesh: TexturedMesh, photos: List[Photo], views: Views):
    """(uvs (N, 2), colours (N, 3), weights (N,)) of every target pixel that shows the mesh and the object."""
    raycaster = Raycaster(mesh.vertices, mesh.faces)
    images = [(photo.camera, 0, photo.rgba[..., :3], photo.rgba[..., 3], PHOTO_WEIGHT) for photo in photos]
    images += [(views.cameras, index, views.rgb[index], views.alpha[index], 1.0)
               for index in range(views.rgb.shape[0])]
    uvs, colours, weights = [], [], []
    for cameras, index, rgb, alpha, weight in images:
        hits = raycaster.cast(cameras, index)
        use = (hits.face_ids != MISS) & (alpha > SURFACE_ALPHA)
        uvs.append(mesh.face_uvs(hits.face_ids[use], hits.weights[use]))
        colours.append(rgb[use])
        weights.append(np.full(int(use.sum()), weight))
    return (torch.from_numpy(np.concatenate(uvs)).float(), torch.from_numpy(np.concatenate(colours)).float(),
            torch.from_numpy(np.concatenate(weights)).float())


def fit_texture(mesh: TexturedMesh, photos: List[Photo], views: Views, steps: int,
                announce: Callable[[str], None] = print, seed: int = 0) -> TexturedMesh:
    """`mesh` with its texture fitted for `steps` Adam steps to the photos and renders (geometry and UVs fixed)."""
    uvs, colours, weights = targets(mesh, photos, views)
    if uvs.shape[0] == 0:
        announce("texture fit skipped: no target pixel shows the mesh")
        return mesh
    texture = torch.nn.Parameter(torch.from_numpy(mesh.texture).float().clone())  # the given mesh stays as it was
    optimiser = torch.optim.Adam([texture], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        error = (lookup(texture, uvs[batch]) - colours[batch]).square().sum(-1)
        return (weights[batch] * error).sum() / weights[batch].sum()

    with torch.no_grad():
        everything = torch.arange(uvs.shape[0])
        before = float(loss_of(everything))
    for _ in range(steps):
        batch = torch.randint(0, uvs.shape[0], (min(PIXELS_PER_STEP, uvs.shape[0]),), generator=generator)
        optimiser.zero_grad()
        loss_of(batch).backward()
        optimiser.step()
        with torch.no_grad():
            texture.clamp_(0.0, 1.0)
    with torch.no_grad():
        after = float(loss_of(everything))
    announce(f"texture fit: {steps} steps over {uvs.shape[0]} pixels, weighted squared error {before:.5f} -> "
             f"{after:.5f}")
    return TexturedMesh(vertices=mesh.vertices, faces=mesh.faces, uvs=mesh.uvs, texture=texture.detach().numpy())
