"""Mesh files: GLB (PBR base-colour texture), OBJ + MTL + PNG, PLY with vertex colours, and the axes each uses.

GLB and OBJ are written in glTF's axes (+Y up): glTF (x, y, z) = world (y, z, x), so the world's up (+Z) is +Y and
the photo's side (+X) faces +Z, glTF's front, where model-viewer's first camera stands. Blender's glTF and OBJ
importers turn +Y up into Blender's +Z up, which puts the object upright with its photo's side towards Blender's
front view (-Y). PLY keeps the project's world (+Z up), as `ns-export` writes its clouds; Blender's PLY importer
reads +Z as up. Textures are sRGB PNG images (glTF's base colour is sRGB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from single_image_nerf.errors import UserInputError
from single_image_nerf.mesh.atlas import to_uint8
from single_image_nerf.mesh.textured import TexturedMesh

MESH_SUFFIXES = (".ply", ".obj", ".glb")
"""Formats written (chosen by the output's suffix)."""
WORLD_TO_GLTF = [1, 2, 0]
"""glTF (x, y, z) = world (y, z, x): a rotation (the axes cycled), +Z up becomes +Y, +X (the photo's side) +Z."""
GLTF_TO_WORLD = [2, 0, 1]
"""The inverse of WORLD_TO_GLTF: world (x, y, z) = glTF (z, x, y)."""


def y_up(suffix: str) -> bool:
    """Whether files with `suffix` are written in glTF's axes (+Y up): GLB and OBJ."""
    return suffix.lower() in (".glb", ".gltf", ".obj")


def textured_trimesh(mesh: TexturedMesh, pbr: bool = False):
    """A trimesh.Trimesh (world axes) with TextureVisuals: a PBR base-colour material (`pbr`, for glTF) or a simple
    diffuse one (OBJ's MTL)."""
    import trimesh
    from PIL import Image

    image = Image.fromarray(to_uint8(mesh.texture))
    if pbr:
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=[255, 255, 255, 255],
                                                       metallicFactor=0.0, roughnessFactor=1.0)
    else:
        material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255))
    visual = trimesh.visual.TextureVisuals(uv=mesh.uvs, image=image, material=material)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, visual=visual, process=False)


def vertex_coloured_trimesh(mesh: TexturedMesh):
    """A trimesh.Trimesh (world axes) with RGBA vertex colours: the texture at each vertex, vertices shared across
    chart seams merged."""
    import trimesh

    colours = np.concatenate([to_uint8(mesh.vertex_colours()), np.full((len(mesh.vertices), 1), 255, np.uint8)], 1)
    result = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colours, process=False)
    result.merge_vertices()
    return result


def to_trimesh(mesh: TexturedMesh, suffix: str):
    """The trimesh of `mesh` as a file with `suffix` holds it: PLY vertex colours, OBJ or GLB a texture."""
    suffix = suffix.lower()
    return vertex_coloured_trimesh(mesh) if suffix == ".ply" else textured_trimesh(mesh, pbr=suffix == ".glb")


def mesh_files(mesh, path: Path) -> Dict[Path, bytes]:
    """The files that make up `mesh` (a trimesh in world axes) written as `path` (an .obj brings its .mtl and
    texture image), in the axes of the format."""
    suffix = path.suffix.lower()
    if y_up(suffix):
        mesh = mesh.copy()
        mesh.vertices = np.asarray(mesh.vertices)[:, WORLD_TO_GLTF]
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


def read_mesh(path: Path):
    """A mesh file written by `mesh_files` (or any GLB, OBJ, PLY) as a trimesh in world axes, textures kept."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no mesh at {path}: pass a .glb, .obj or .ply file written by sin-export-mesh")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # any parser failure means the same to the user
        raise UserInputError(f"{path} is not a readable mesh ({type(error).__name__}): pass a .glb, .obj or .ply "
                             f"file written by sin-export-mesh") from None
    if len(getattr(mesh, "faces", [])) == 0:
        raise UserInputError(f"{path} holds no triangles: pass a mesh written by sin-export-mesh")
    if y_up(path.suffix):
        mesh.vertices = np.asarray(mesh.vertices)[:, GLTF_TO_WORLD]
    return mesh


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
