"""Cleaning a surface: drop floaters and small disconnected pieces, close holes, decimate to a face budget."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from single_image_nerf.refine.surface import Surface

SMALL_PIECE = 0.02
"""A connected piece with less than this fraction of the largest piece's area is a floater (dropped by default)."""


def drop_small_pieces(surface: Surface, fraction: float = SMALL_PIECE) -> Surface:
    """The connected pieces (shared edges) whose area is at least `fraction` of the largest one's."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    areas = np.bincount(labels, weights=mesh.area_faces)
    keep = np.isin(labels, np.nonzero(areas >= fraction * areas.max())[0])
    return compact(surface.vertices, surface.faces[keep])


def close_holes(surface: Surface) -> Surface:
    """Holes (boundary loops) filled by trimesh's hole filling; a closed surface comes back unchanged."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces, process=False)
    if not mesh.is_watertight:
        mesh.merge_vertices()
        trimesh.repair.fill_holes(mesh)
    return Surface(vertices=np.asarray(mesh.vertices, dtype=np.float32), faces=np.asarray(mesh.faces, np.int64))


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int, colours: Optional[np.ndarray] = None
             ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """open3d's quadric error decimation to at most `max_faces` triangles; (N, 3) uint8 `colours` follow the
    vertices. Returns (vertices, faces, colours or None)."""
    import open3d as o3d  # pylint: disable=import-outside-toplevel

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.asarray(faces).astype(np.int32)))
    if colours is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(colours, np.float64) / 255.0)
    small = mesh.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    small.remove_unreferenced_vertices()
    kept = np.asarray(small.triangles, dtype=np.int64)
    if len(kept) > max_faces:
        raise ValueError(f"decimation left {len(kept)} triangles, more than {max_faces}")
    new_colours = None
    if colours is not None:
        new_colours = np.round(np.clip(np.asarray(small.vertex_colors), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.asarray(small.vertices, dtype=np.float64), kept, new_colours


def clean(surface: Surface, max_faces: int, keep_small_pieces: bool = False) -> Surface:
    """Small pieces dropped (unless `keep_small_pieces`), holes closed, then at most `max_faces` faces."""
    if not keep_small_pieces:
        surface = drop_small_pieces(surface)
    surface = close_holes(surface)
    if len(surface.faces) > max_faces:
        vertices, faces, _ = decimate(surface.vertices, surface.faces, max_faces)
        surface = Surface(vertices=vertices.astype(np.float32), faces=faces)
    return surface


def compact(vertices: np.ndarray, faces: np.ndarray) -> Surface:
    """The surface of `faces` with the vertices they use, renumbered."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return Surface(vertices=vertices[used], faces=inverse.reshape(-1, 3).astype(np.int64))
