"""`sin-export-mesh`: a finished run (coarse or refine) as a clean triangle mesh with a UV texture or vertex
colours (.glb, .obj + .mtl + .png, .ply). The work is the mesh stage's (single_image_nerf/mesh/); this is its
command line.

A coarse run is meshed at its density's level set and coloured by its albedo field; a refine run (Gaussians) by its
rendered depth fused all round, textured from the photo where the photo's camera sees the surface and from the
model's renders elsewhere (docs/export.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from single_image_nerf import runs
from single_image_nerf.errors import UserInputError, run_command
from single_image_nerf.mesh.atlas import rasterize_uv, uv_layout  # noqa: F401  (the names tests and tools import)
from single_image_nerf.mesh.fields import bake_texture, query_chunked, textured_mesh, vertex_colour_mesh  # noqa: F401
from single_image_nerf.mesh.files import MESH_SUFFIXES, mesh_files, to_trimesh, write_files  # noqa: F401
from single_image_nerf.mesh.export import MeshOptions
from single_image_nerf.refine.surface import FieldFn

@dataclass(kw_only=True)
class ExportMeshConfig(MeshOptions):
    """Export a finished run (coarse or refine) as a mesh with a UV texture or vertex colours."""

    load_config: Path
    """config.yml of a coarse or refine run (outputs/<name>/<method>/<time>/config.yml)."""
    output: Path = Path("mesh.ply")
    """Mesh file to write; its suffix picks the format: .ply, .obj (with .mtl and .png beside it) or .glb."""
    texture: Literal["auto", "vertex", "uv"] = "auto"
    """Colour as per-vertex colours or as a UV texture image (xatlas layout; .obj and .glb only); auto: a texture for
    .glb and .obj, vertex colours for .ply."""
    overwrite: bool = False
    """Replace existing output files instead of refusing to."""


def mesh_from_fields(density_fn: FieldFn, albedo_fn: FieldFn, aabb, level: float, resolution: int,
                     texture: str = "vertex", texture_size: int = 1024, chunk: int = 1 << 16,
                     progress: bool = False, max_faces: int = 0, keep_small_pieces: bool = True):
    """Marching cubes on `density_fn` over `aabb` at `level`, cleaned (`max_faces` > 0), coloured by `albedo_fn`
    (vertex colours or a UV texture). Raises a one-line UserInputError when the density never crosses `level`."""
    from tqdm import tqdm

    from single_image_nerf.mesh.clean import clean
    from single_image_nerf.mesh.geometry import level_set

    bar = tqdm(total=resolution ** 3, desc="density grid", unit="pt", unit_scale=True, disable=not progress,
               leave=False)
    try:
        surface = level_set(density_fn, aabb, level, resolution, chunk, lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    if max_faces > 0:
        surface = clean(surface, max_faces, keep_small_pieces)
    if texture == "uv":
        return textured_mesh(surface, albedo_fn, texture_size, chunk, progress)
    return vertex_colour_mesh(surface, albedo_fn, chunk, progress)


def texture_kind(config: ExportMeshConfig, output: Path) -> str:
    """uv or vertex, as `--texture` and the output's suffix say."""
    if config.texture == "auto":
        return "vertex" if output.suffix.lower() == ".ply" else "uv"
    return config.texture


def check_config(config: ExportMeshConfig) -> Path:
    """Options and output before anything is loaded (one line each); the checked output path."""
    from single_image_nerf.inputs import check_numbers

    check_numbers(config)
    output = runs.check_output(config.output, config.overwrite, MESH_SUFFIXES)
    if config.texture == "uv" and output.suffix.lower() == ".ply":
        raise UserInputError("a UV texture needs an .obj or .glb output (PLY has no texture image): "
                             "use --texture vertex for .ply")
    if config.resolution < 8:
        raise UserInputError(f"--resolution must be at least 8, got {config.resolution}")
    return output


def load_run(config: ExportMeshConfig):
    """The run's pipeline, refusing a run of neither stage before its model is built."""
    run_config = runs.read_run_config(config.load_config)
    runs.check_stage_run(config.load_config, run_config,
                         f"sin-export-mesh takes a {runs.COARSE_METHOD} (coarse) or single-image-refine run")
    _, pipeline = runs.load_pipeline(config.load_config, run_config)
    return pipeline


def build_mesh(config: ExportMeshConfig, pipeline, kind: str, announce: Callable[[str], None]):
    """The trimesh (world axes) of the run as `config` asks."""
    from single_image_nerf.mesh.export import make_mesh
    from single_image_nerf.mesh.geometry import chosen_geometry
    from single_image_nerf.mesh.source import ModelSource

    source = ModelSource(pipeline)
    geometry = chosen_geometry(config.geometry, source.has_density)
    if geometry == "level-set" and not source.has_density:
        coarse = getattr(getattr(source.model, "config", None), "coarse_config", None)
        raise UserInputError(f"--geometry level-set needs the density field of a coarse run: {config.load_config} is "
                             f"a refine run; use --geometry fused-depth (or auto), or export the coarse run it was "
                             f"seeded from{f' ({coarse})' if coarse else ''}")
    if source.has_density and geometry == "level-set":
        model = source.model
        was_training = model.training
        model.eval()
        try:
            return mesh_from_fields(model.query_density, model.query_albedo, source.aabb, config.level,
                                    config.resolution, kind, config.texture_size, config.chunk, progress=True,
                                    max_faces=config.max_faces, keep_small_pieces=config.keep_small_pieces)
        finally:
            model.train(was_training)
    return to_trimesh(make_mesh(source, config, announce), ".ply" if kind == "vertex" else ".glb")


def export_mesh(config: ExportMeshConfig, pipeline=None, announce: Callable[[str], None] = print):
    """Run the export; `pipeline` may be given already loaded (tests). Returns the written mesh (trimesh, world
    axes)."""
    output = check_config(config)
    kind = texture_kind(config, output)
    if pipeline is None:
        pipeline = load_run(config)
    mesh = build_mesh(config, pipeline, kind, announce)
    write_files(mesh_files(mesh, output), config.overwrite)
    announce(f"wrote {output} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
             f"{'UV texture' if kind == 'uv' else 'vertex colours'}{', watertight' if mesh.is_watertight else ''})")
    return mesh


def entrypoint() -> None:
    """Console entry point (`sin-export-mesh`)."""
    import tyro

    run_command("sin-export-mesh", lambda: export_mesh(tyro.cli(ExportMeshConfig, prog="sin-export-mesh")))


if __name__ == "__main__":
    entrypoint()
