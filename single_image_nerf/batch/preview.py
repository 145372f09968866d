"""The catalogue page's 3D previews: each object's mesh (.glb) cut down to at most `MAX_TRIANGLES` triangles and
written as a classic script, OUT/index_files/meshes/<name>.js, that hands the GLB (base64) to the page. A page
opened from disk (file://) may load scripts from its folder but not fetch a .glb, so the mesh travels inside one.

The mesh is read in the project's world (mesh/files.py turns a GLB's glTF axes back). Within the cap, a textured
mesh keeps its texture (shrunk to at most `MAX_TEXTURE` pixels a side); above it, the mesh's vertex colours (a
texture sampled at the vertices first) are kept and it is decimated with open3d's quadric error decimation. The
preview is written in glTF's axes (+Y up, the photo's side towards the viewer's first camera on +Z), so the page
first shows the object as the photo does. A preview newer than its mesh is kept.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

MAX_TRIANGLES = 20_000
"""Triangles of a preview at most: about 0.5 MB of GLB with normals and vertex colours, 0.7 MB as base64."""
MAX_TEXTURE = 512
"""Side in pixels of a preview's texture at most (a 512^2 PNG: well under the page's budget per mesh)."""


def preview_glb(mesh, max_triangles: int = MAX_TRIANGLES) -> bytes:
    """A trimesh mesh as the preview's GLB bytes: vertex colours, at most `max_triangles` triangles, glTF axes."""
    import trimesh

    from single_image_nerf.mesh.files import WORLD_TO_GLTF

    if mesh.visual.kind == "texture" and len(mesh.faces) <= max_triangles:
        return textured_preview(mesh)
    if mesh.visual.kind == "texture":
        mesh.visual = mesh.visual.to_color()
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colours = np.asarray(mesh.visual.vertex_colors, dtype=np.uint8)[:, :3] if mesh.visual.kind else \
        np.full((len(vertices), 3), 200, np.uint8)
    if len(faces) > max_triangles:
        vertices, faces, colours = decimate(vertices, faces, colours, max_triangles)
    preview = trimesh.Trimesh(vertices=vertices[:, WORLD_TO_GLTF], faces=faces, vertex_colors=colours, process=False)
    return preview.export(file_type="glb", include_normals=True)


def textured_preview(mesh) -> bytes:
    """A textured mesh (world axes) as GLB bytes in glTF axes, its texture shrunk to at most MAX_TEXTURE a side."""
    from single_image_nerf.mesh.files import WORLD_TO_GLTF

    mesh = mesh.copy()
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is not None and max(image.size) > MAX_TEXTURE:
        image = image.resize((MAX_TEXTURE, MAX_TEXTURE))
        if hasattr(material, "baseColorTexture"):
            material.baseColorTexture = image
        else:
            material.image = image
    mesh.vertices = np.asarray(mesh.vertices)[:, WORLD_TO_GLTF]
    return mesh.export(file_type="glb")


def decimate(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, max_triangles: int):
    """open3d's quadric error decimation to at most `max_triangles` triangles; colours follow the vertices."""
    from single_image_nerf.mesh.clean import decimate as quadric

    return quadric(vertices, faces, max_triangles, colours)


def preview_script(name: str, glb: bytes) -> str:
    """The classic script that hands `glb` to the page's loader (index_files/catalogue.js)."""
    return f'sinBatchMesh({json.dumps(name)}, "{base64.b64encode(glb).decode("ascii")}");\n'


def write_preview(mesh_path: Path, target: Path, name: str, max_triangles: int = MAX_TRIANGLES) -> Path:
    """Write `target` (the preview script of the object `name`) from its mesh unless a newer one is there."""
    from single_image_nerf.mesh.files import read_mesh

    mesh_path, target = Path(mesh_path), Path(target)
    if target.is_file() and target.stat().st_mtime >= mesh_path.stat().st_mtime:
        return target
    mesh = read_mesh(mesh_path)  # world axes
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(preview_script(name, preview_glb(mesh, max_triangles)), encoding="ascii")
    os.replace(partial, target)
    return target
