"""Colour straight from a coarse run's albedo field: per vertex, or baked into a UV texture (each texel takes the
albedo at the surface point it maps to). The coarse run's own export path, exact where the field is known."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from single_image_nerf.errors import UserInputError
from single_image_nerf.mesh.atlas import pad_seams, rasterize_uv, to_uint8, uv_layout
from single_image_nerf.refine.surface import FieldFn, Surface


def query_chunked(field_fn: FieldFn, points: np.ndarray, chunk: int = 1 << 16, desc: Optional[str] = None) -> np.ndarray:
    """`field_fn` at (N, 3) points, batched, as float32 (N, C), with a progress bar when `desc` is given."""
    from tqdm import tqdm

    results = []
    starts = range(0, points.shape[0], chunk)
    with torch.no_grad():
        for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None, leave=False):
            batch = torch.from_numpy(np.ascontiguousarray(points[start:start + chunk], dtype=np.float32))
            results.append(field_fn(batch).float().cpu().numpy())
    if not results:
        return np.zeros((0, 3), dtype=np.float32)
    return np.concatenate(results).astype(np.float32)


def vertex_colour_mesh(surface: Surface, albedo_fn: FieldFn, chunk: int = 1 << 16, progress: bool = False):
    """A trimesh.Trimesh of `surface` with RGBA uint8 vertex colours from `albedo_fn` at the vertices."""
    import trimesh

    albedo = query_chunked(albedo_fn, surface.vertices, chunk, "vertex colours" if progress else None)
    colours = np.concatenate([to_uint8(albedo), np.full((albedo.shape[0], 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces, vertex_colors=colours, process=False)


def bake_texture(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, albedo_fn: FieldFn, size: int,
                 chunk: int = 1 << 16, progress: bool = False) -> np.ndarray:
    """(size, size, 3) uint8 texture: the albedo at the surface point under each covered texel; seams padded."""
    rows, cols, face_ids, weights = rasterize_uv(uvs, faces, size)
    if rows.size == 0:
        raise UserInputError(f"the UV layout covers no texel of a {size}x{size} texture: raise --texture-size")
    points = np.einsum("kj,kjd->kd", weights, vertices[faces[face_ids]].astype(np.float64))
    albedo = query_chunked(albedo_fn, points, chunk, "baking texture" if progress else None)
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[rows, cols] = albedo
    covered = np.zeros((size, size), dtype=bool)
    covered[rows, cols] = True
    return to_uint8(pad_seams(image, covered))


def textured_mesh(surface: Surface, albedo_fn: FieldFn, size: int, chunk: int = 1 << 16, progress: bool = False):
    """A trimesh.Trimesh of `surface` laid out by xatlas with a baked albedo texture (TextureVisuals)."""
    from single_image_nerf.mesh.files import textured_trimesh
    from single_image_nerf.mesh.textured import TexturedMesh

    vmapping, faces, uvs = uv_layout(surface.vertices, surface.faces)
    vertices = surface.vertices[vmapping]
    texture = bake_texture(vertices, faces, uvs, albedo_fn, size, chunk, progress)
    return textured_trimesh(TexturedMesh(vertices, faces, uvs, texture.astype(np.float32) / 255.0))
