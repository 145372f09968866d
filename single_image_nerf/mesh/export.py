"""The mesh stage's chain, for either stage's finished model: surface, cleaning, atlas, bake, optional fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from single_image_nerf.mesh import bake as B
from single_image_nerf.mesh import clean as C
from single_image_nerf.mesh import geometry as G
from single_image_nerf.mesh.atlas import uv_layout
from single_image_nerf.mesh.source import ModelSource, sphere_cameras
from single_image_nerf.mesh.textured import TexturedMesh


@dataclass
class MeshOptions:
    """How the chain runs (sin-export-mesh's options)."""

    geometry: str = "auto"
    """auto, level-set or fused-depth (geometry.py)."""
    level: float = 10.0
    """Density level of a level set."""
    resolution: int = 256
    """Grid samples per side of the scene box."""
    depth_views: int = 48
    """Cameras all round whose depth is fused."""
    depth_resolution: int = 256
    """Side in pixels of the depth renders."""
    max_faces: int = 100_000
    """Face budget after cleaning."""
    keep_small_pieces: bool = False
    """Keep floaters and small disconnected pieces."""
    texture_size: int = 2048
    """Side in pixels of the texture."""
    bake_views: int = 32
    """Cameras all round whose renders colour what no photo sees."""
    bake_resolution: int = 512
    """Side in pixels of those renders."""
    fit_steps: int = 0
    """Steps of the texture fit after the bake (0: none)."""
    chunk: int = 1 << 16
    """Field queries per batch."""


def surface_of(source: ModelSource, options: MeshOptions, announce: Callable[[str], None]):
    """The model's surface, by the geometry `options` choose."""
    geometry = G.chosen_geometry(options.geometry, source.has_density)
    if geometry == "level-set":
        surface = G.level_set(source.model.query_density, source.aabb, options.level, options.resolution,
                              options.chunk)
    else:
        reference, _ = source.reference_orbit()
        views = source.render(sphere_cameras(reference, options.depth_views, options.depth_resolution),
                              progress="depth renders")
        surface = G.fused_depth(views, source.aabb, options.resolution)
    announce(G.describe(surface, geometry))
    return surface


def make_mesh(source: ModelSource, options: MeshOptions, announce: Callable[[str], None] = print,
              surface=None) -> TexturedMesh:
    """The textured mesh of the model: surface (or the given `surface`), cleaned, laid out, baked, fitted."""
    surface = surface if surface is not None else surface_of(source, options, announce)
    surface = C.clean(surface, options.max_faces, options.keep_small_pieces)
    announce(G.describe(surface, "cleaned"))
    vmapping, faces, uvs = uv_layout(surface.vertices, surface.faces)
    vertices = surface.vertices[vmapping].astype(np.float32)
    reference, _ = source.reference_orbit()
    views = source.render(sphere_cameras(reference, options.bake_views, options.bake_resolution),
                          progress="colour renders")
    baked = B.bake(vertices, faces, uvs, options.texture_size, source.photos(), views)
    announce(f"texture {options.texture_size}^2: {baked.from_photo} texels from the photo, {baked.from_renders} "
             f"from renders, {baked.unseen} unseen (padded)")
    mesh = TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=baked.texture)
    if options.fit_steps > 0:
        from single_image_nerf.mesh.fit import fit_texture

        mesh = fit_texture(mesh, source.photos(), views, options.fit_steps, announce)
    return mesh
