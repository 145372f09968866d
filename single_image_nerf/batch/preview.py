"""The catalogue page's 3D previews: each object's mesh (.glb) cut down to at most `MAX_TRIANGLES` triangles and
written as a classic script, OUT/index_files/meshes/<name>.js, that hands the GLB (base64) to the page. A page
opened from disk (file://) may load scripts from its folder but not fetch a .glb, so the mesh travels inside one.

The preview keeps the mesh's vertex colours (a UV texture is sampled at the vertices first), decimates it with
open3d's quadric error decimation when it has more triangles than the cap, and turns the project's world (+Z up,
the photo's camera on +X) into glTF's (+Y up, the viewer's first camera on +Z), so the page first shows the object
as the photo does. A preview newer than its mesh is kept.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

MAX_TRIANGLES = 20_000
"""Triangles of a preview at most: about 0.5 MB of GLB with normals and vertex colours, 0.7 MB as base64."""
WORLD_TO_GLTF = [1, 2, 0]
"""glTF (x, y, z) = world (y, z, x): world up +Z becomes +Y, the photo's side +X faces glTF's default camera (+Z)
and world +Y stays on the right of the screen, as in the photo (a rotation: the axes are cycled)."""


def preview_glb(mesh, max_triangles: int = MAX_TRIANGLES) -> bytes:
    """A trimesh mesh as the preview's GLB bytes: vertex colours, at most `max_triangles` triangles, glTF axes."""
    import trimesh

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


def decimate(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, max_triangles: int):
    """open3d's quadric error decimation to at most `max_triangles` triangles; colours follow the vertices."""
    import open3d as o3d  # pylint: disable=import-outside-toplevel

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                     o3d.utility.Vector3iVector(faces.astype(np.int32)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(colours.astype(np.float64) / 255.0)
    small = mesh.simplify_quadric_decimation(target_number_of_triangles=max_triangles)
    small.remove_unreferenced_vertices()
    kept = np.asarray(small.triangles, dtype=np.int64)
    if len(kept) > max_triangles:
        raise ValueError(f"decimation left {len(kept)} triangles, more than {max_triangles}")
    new_colours = np.round(np.clip(np.asarray(small.vertex_colors), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.asarray(small.vertices, dtype=np.float64), kept, new_colours


def preview_script(name: str, glb: bytes) -> str:
    """The classic script that hands `glb` to the page's loader (index_files/catalogue.js)."""
    return f'sinBatchMesh({json.dumps(name)}, "{base64.b64encode(glb).decode("ascii")}");\n'


def write_preview(mesh_path: Path, target: Path, name: str, max_triangles: int = MAX_TRIANGLES) -> Path:
    """Write `target` (the preview script of the object `name`) from its mesh unless a newer one is there."""
    import trimesh

    mesh_path, target = Path(mesh_path), Path(target)
    if target.is_file() and target.stat().st_mtime >= mesh_path.stat().st_mtime:
        return target
    mesh = trimesh.load(mesh_path, force="mesh")
    if len(mesh.faces) == 0:
        raise ValueError(f"{mesh_path} has no triangles")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(preview_script(name, preview_glb(mesh, max_triangles)), encoding="ascii")
    os.replace(partial, target)
    return target
