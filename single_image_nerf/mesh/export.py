"""The mesh stage's chain, for either stage's finished model: surface, cleaning, atlas, bake, optional fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

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

    geometry: Literal["auto", "level-set", "fused-depth"] = "auto"
    """The surface: auto takes the density's level set for a coarse run and the fused rendered depth for a refine
    run (the Gaussians have no level set of their own); level-set needs a coarse run (a refine run names it)."""
    level: float = 10.0
    """Density level of the surface (the coarse field's density is exp(raw); its initial blob peaks near 150)."""
    resolution: int = 256
    """Grid samples per side of the scene box (marching cubes, depth fusion)."""
    texture_size: int = 2048
    """Side in pixels of the UV texture image (2048: the box's photo side stays sharper than the 512 px photo)."""
    max_faces: int = 100_000
    """Face budget: the cleaned mesh is decimated (quadric error) to at most this many triangles."""
    keep_small_pieces: bool = False
    """Keep floaters and small disconnected pieces (by default pieces under 2% of the largest one's area go)."""
    depth_views: int = 48
    """Cameras round the object whose depth is fused (fused-depth geometry), spread over the band of elevations the
    run was trained to be seen from (a model's renders from elsewhere, below a photographed object say, are
    untaught)."""
    depth_resolution: int = 256
    """Side in pixels of the depth renders (the photos' cameras are fused too, at the photos' own sizes)."""
    smooth_iterations: int = 0
    """Steps of Taubin smoothing of the fused-depth surface (a smoother surface, a less broken UV atlas; measured on
    the box, it rounds edges and costs the held-out views 0.3 dB at 10 steps: off by default)."""
    bake_views: int = 32
    """Cameras round the object whose renders colour the texels no photo sees. (They are not fused into the
    geometry: at 512 px the Gaussians' silhouettes from novel views fray and would carve into the object.)"""
    bake_resolution: int = 512
    """Side in pixels of those renders (the photo's size in the refine benchmark)."""
    fit_steps: int = 0
    """Steps of the differentiable texture fit after the bake (0: none)."""
    chunk: int = 1 << 16
    """Field queries per batch (lower it when memory is short)."""


def surface_of(source: ModelSource, options: MeshOptions, announce: Callable[[str], None]):
    """The model's surface, by the geometry `options` choose."""
    geometry = G.chosen_geometry(options.geometry, source.has_density)
    if geometry == "level-set":
        surface = G.level_set(source.model.query_density, source.aabb, options.level, options.resolution,
                              options.chunk)
    else:
        views = source.render(sphere_cameras(source.reference_camera(), options.depth_views, options.depth_resolution,
                                             source.trained_elevations()),
                              progress="depth renders")
        photo_views = [G.with_photo_silhouette(source.render(photo.camera), photo) for photo in source.photos()]
        surface = G.smoothed(G.fused_depth([views, *photo_views], source.aabb, options.resolution),
                             options.smooth_iterations)
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
    views = source.render(sphere_cameras(source.reference_camera(), options.bake_views, options.bake_resolution,
                                         source.trained_elevations()),
                          progress="colour renders")
    baked = B.bake(vertices, faces, uvs, options.texture_size, source.photos(), views)
    announce(f"texture {options.texture_size}^2: {baked.from_photo} texels from the photo, {baked.from_renders} "
             f"from renders, {baked.unseen} unseen (from the nearest seen surface)")
    mesh = TexturedMesh(vertices=vertices, faces=faces, uvs=uvs, texture=baked.texture)
    if options.fit_steps > 0:
        from single_image_nerf.mesh.fit import fit_texture

        mesh = fit_texture(mesh, source.photos(), views, options.fit_steps, announce)
    return mesh
