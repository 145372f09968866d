"""`sin-export-mesh`: a coarse run's density level set as a coloured or UV-textured triangle mesh (.ply, .obj, .glb).

Marching cubes (refine/surface.py, shared with the Gaussian seeding) on the density sampled over the scene box at a
chosen level and resolution. Colours come from the field's albedo: per vertex, or baked into a UV texture laid out
by xatlas (each texel takes the albedo at the surface point it maps to; empty texels take their nearest filled
neighbour's colour so that filtering across chart borders does not bleed in black).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Literal, Optional

import numpy as np
import torch

from single_image_nerf.errors import UserInputError, run_command
from single_image_nerf.refine.surface import FieldFn, Surface, evaluate_grid, extract_surface
from single_image_nerf import runs

MESH_SUFFIXES = (".ply", ".obj", ".glb")
"""Formats the command writes (chosen by the output's suffix)."""


@dataclass
class ExportMeshConfig:
    """Export the coarse density's level set as a mesh with vertex colours or a UV texture."""

    load_config: Path
    """config.yml of a coarse run (outputs/<name>/single-image-nerf/<time>/config.yml)."""
    output: Path = Path("mesh.ply")
    """Mesh file to write; its suffix picks the format: .ply, .obj (with .mtl and .png beside it) or .glb."""
    level: float = 10.0
    """Density level of the surface (the coarse field's density is exp(raw); its initial blob peaks near 150)."""
    resolution: int = 256
    """Grid samples per side of the scene box for marching cubes."""
    texture: Literal["vertex", "uv"] = "vertex"
    """Colour as per-vertex albedo, or as a UV texture image (xatlas layout; .obj and .glb only)."""
    texture_size: int = 1024
    """Side in pixels of the UV texture image."""
    overwrite: bool = False
    """Replace existing output files instead of refusing to."""
    chunk: int = 1 << 16
    """Field queries per batch (lower it when memory is short)."""


# ---------------------------------------------------------------------------------------------- pure functions


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


def to_uint8(colours: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] to uint8, rounded."""
    return np.round(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)


def uv_layout(surface: Surface):
    """xatlas charts: (vertex map into the surface's vertices, faces over the new vertices, (V', 2) uvs in [0, 1])."""
    import xatlas

    vmapping, faces, uvs = xatlas.parametrize(surface.vertices.astype(np.float32), surface.faces.astype(np.uint32))
    return vmapping.astype(np.int64), faces.astype(np.int64), uvs.astype(np.float32)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Which triangle covers each texel centre of a `size`^2 texture, and where.

    Row r of the image holds v = 1 - (r + 0.5) / size (image rows run top to bottom, v bottom to top, as glTF, OBJ
    viewers and trimesh read them). Returns (texel rows, texel cols, face ids, barycentric weights (K, 3)).
    """
    corners = uvs[faces] * size  # (F, 3, 2) in texel units, x = u * size, y = (1 - v) * size
    corners = np.stack([corners[..., 0], size - corners[..., 1]], axis=-1).astype(np.float64)
    low = np.clip(np.floor(corners.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    high = np.clip(np.ceil(corners.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    extent = high - low + 1  # (F, 2) texel box of each triangle, columns and rows
    counts = extent[:, 0] * extent[:, 1]
    face_ids = np.repeat(np.arange(faces.shape[0]), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = low[face_ids, 0] + offsets % extent[face_ids, 0]
    rows = low[face_ids, 1] + offsets // extent[face_ids, 0]
    centre = np.stack([cols + 0.5, rows + 0.5], axis=-1)
    a, b, c = (corners[face_ids, i] for i in range(3))
    v0, v1, v2 = b - a, c - a, centre - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    safe = np.where(np.abs(denominator) < 1e-12, 1.0, denominator)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / safe
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / safe
    weights = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)
    inside = (np.abs(denominator) >= 1e-12) & (weights >= -1e-6).all(axis=-1)
    return rows[inside], cols[inside], face_ids[inside], weights[inside]


def bake_texture(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, albedo_fn: FieldFn, size: int,
                 chunk: int = 1 << 16, progress: bool = False) -> np.ndarray:
    """(size, size, 3) uint8 texture: the albedo at the surface point under each covered texel; uncovered texels
    copy their nearest covered texel."""
    from scipy.ndimage import distance_transform_edt

    rows, cols, face_ids, weights = rasterize_uv(uvs, faces, size)
    if rows.size == 0:
        raise UserInputError(f"the UV layout covers no texel of a {size}x{size} texture: raise --texture-size")
    points = np.einsum("kj,kjd->kd", weights, vertices[faces[face_ids]].astype(np.float64))
    albedo = query_chunked(albedo_fn, points, chunk, "baking texture" if progress else None)
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[rows, cols] = albedo
    covered = np.zeros((size, size), dtype=bool)
    covered[rows, cols] = True
    _, (near_rows, near_cols) = distance_transform_edt(~covered, return_indices=True)
    return to_uint8(image[near_rows, near_cols])


def textured_mesh(surface: Surface, albedo_fn: FieldFn, size: int, chunk: int = 1 << 16, progress: bool = False):
    """A trimesh.Trimesh of `surface` laid out by xatlas with a baked albedo texture (TextureVisuals)."""
    import trimesh
    from PIL import Image

    vmapping, faces, uvs = uv_layout(surface)
    vertices = surface.vertices[vmapping]
    texture = bake_texture(vertices, faces, uvs, albedo_fn, size, chunk, progress)
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture), diffuse=(255, 255, 255, 255))
    visual = trimesh.visual.TextureVisuals(uv=uvs, image=Image.fromarray(texture), material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def mesh_from_fields(density_fn: FieldFn, albedo_fn: FieldFn, aabb, level: float, resolution: int,
                     texture: str = "vertex", texture_size: int = 1024, chunk: int = 1 << 16,
                     progress: bool = False):
    """Marching cubes on `density_fn` over `aabb` at `level`, coloured by `albedo_fn` (vertex colours or a UV
    texture). Raises a one-line UserInputError when the density never crosses `level`."""
    from tqdm import tqdm

    bar = tqdm(total=resolution ** 3, desc="density grid", unit="pt", unit_scale=True, disable=not progress,
               leave=False)

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        grid = evaluate_grid(density_fn, aabb, resolution, chunk=chunk, progress=advance)
    finally:
        bar.close()
    surface = extract_surface(grid, level)
    if texture == "uv":
        return textured_mesh(surface, albedo_fn, texture_size, chunk, progress)
    return vertex_colour_mesh(surface, albedo_fn, chunk, progress)


def mesh_files(mesh, path: Path) -> Dict[Path, bytes]:
    """The files that make up `mesh` written as `path` (an .obj brings its .mtl and texture image)."""
    suffix = path.suffix.lower()
    if suffix == ".obj":
        from trimesh.exchange.obj import export_obj

        material = getattr(mesh.visual, "material", None)
        if material is not None:  # names the texture image after the mesh rather than "material_0"
            material.name = path.stem
        text, extras = export_obj(mesh, include_texture=True, return_texture=True, mtl_name=f"{path.stem}.mtl")
        files = {path: text.encode("utf-8")}
        files.update({path.parent / name: data for name, data in extras.items()})
        return files
    return {path: mesh.export(file_type=suffix[1:])}


def write_files(files: Dict[Path, bytes], overwrite: bool) -> None:
    """Write every file, refusing to replace any that exists unless `overwrite`; nothing is written on refusal."""
    clashes = [path for path in files if path.exists()]
    if clashes and not overwrite:
        raise UserInputError(f"{clashes[0]} already exists: pass --overwrite to replace it")
    # The mesh itself comes first in `files` and is written last: an interrupted export never leaves a mesh file
    # whose texture or material is missing or stale.
    for path, data in reversed(list(files.items())):
        try:
            temporary = path.with_name(f".{path.name}.partial")
            temporary.write_bytes(data)
            temporary.replace(path)
        except OSError as error:
            raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None


# ------------------------------------------------------------------------------------------------- the command


def export_mesh(config: ExportMeshConfig, pipeline=None, announce: Callable[[str], None] = print):
    """Run the export; `pipeline` may be given already loaded (tests). Returns the written mesh (trimesh)."""
    from single_image_nerf.inputs import check_numbers

    check_numbers(config)
    output = runs.check_output(config.output, config.overwrite, MESH_SUFFIXES)
    if config.texture == "uv" and output.suffix.lower() == ".ply":
        raise UserInputError("a UV texture needs an .obj or .glb output (PLY has no texture image): "
                             "use --texture vertex for .ply")
    if config.resolution < 8:
        raise UserInputError(f"--resolution must be at least 8, got {config.resolution}")
    if pipeline is None:
        run_config = runs.read_run_config(config.load_config)
        if not runs.is_coarse_run(run_config):
            raise UserInputError(wrong_method_message(run_config, config.load_config))
        _, pipeline = runs.load_pipeline(config.load_config, run_config)
    model = pipeline.model
    if not hasattr(model, "query_density") or not hasattr(model, "query_albedo"):
        raise UserInputError(f"the run's model ({type(model).__name__}) has no density field to mesh: "
                             f"pass a {runs.COARSE_METHOD} run")
    was_training = model.training
    model.eval()
    try:
        mesh = mesh_from_fields(model.query_density, model.query_albedo, model.scene_box.aabb.cpu(), config.level,
                                config.resolution, config.texture, config.texture_size, config.chunk, progress=True)
    finally:
        model.train(was_training)
    files = mesh_files(mesh, output)
    write_files(files, config.overwrite)
    announce(f"wrote {output} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
             f"{'UV texture' if config.texture == 'uv' else 'vertex colours'}"
             f"{', watertight' if mesh.is_watertight else ''})")
    return mesh


def wrong_method_message(run_config, path: Path) -> str:
    """The one line for a run whose model has no density field."""
    name = getattr(run_config, "method_name", None) or runs.model_class(run_config).__name__
    coarse = getattr(run_config.pipeline.model, "coarse_config", None)
    hint = f" (this run was seeded from {coarse}: export that one)" if coarse else ""
    return (f"{path} is a {name} run: a mesh needs the density field of a {runs.COARSE_METHOD} run{hint}")


def entrypoint() -> None:
    """Console entry point (`sin-export-mesh`)."""
    import tyro

    run_command("sin-export-mesh", lambda: export_mesh(tyro.cli(ExportMeshConfig, prog="sin-export-mesh")))


if __name__ == "__main__":
    entrypoint()
