"""Textured meshes as known objects: a glTF/GLB, OBJ (+MTL and texture) or PLY file, placed in the project's world.

trimesh reads the file (every part of a scene, each with its own material), open3d's `RaycastingScene` answers
ray casts, closest-point queries and signed distances, and trimesh samples points on the surface. Placement follows
the procedural objects: glTF's +Y up is turned to our +Z up (OBJ and PLY are read as +Z up), the mesh is centred on
its bounding box and scaled so that its farthest vertex lies `BOUND_RADIUS` from the origin, then turned about +Z so
that the azimuth `front` of the file's own frame faces the reference camera (azimuth 0, +X).

A mesh known object is named by a registered asset's name (`MESH_ASSETS`) or a file path, either optionally followed
by `@DEGREES`, the front azimuth (e.g. `milk-truck@90`, `scan.ply@180`). Colour of a surface point: its part's
base-colour texture sampled bilinearly at the interpolated texture coordinate, else its interpolated vertex colour,
else the part's base-colour factor; the factor multiplies the other two as glTF does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from single_image_nerf.errors import UserInputError

BOUND_RADIUS = 0.6
"""Distance of the placed mesh's farthest vertex from the origin (the procedural objects reach 0.51 to 0.63)."""
MAX_FACES = 1_000_000
"""Largest face count read; a larger mesh is refused (decimate it first)."""
ASSET_DIR = Path(__file__).resolve().parent / "assets"
"""The vendored meshes (their licences and attribution in assets/README.md)."""
SUFFIXES = (".glb", ".gltf", ".obj", ".ply")
"""File types read as meshes."""


@dataclass(frozen=True)
class MeshAsset:
    """A vendored mesh registered by name."""

    file: str
    """Path below `ASSET_DIR`."""
    front: float
    """Azimuth of the file's frame (after the up conversion) that faces the reference camera."""
    caption: str
    """A caption for the object, written beside its reference view."""


MESH_ASSETS: Dict[str, MeshAsset] = {
    "milk-truck": MeshAsset("cesium-milk-truck/CesiumMilkTruck.glb", 90.0, "a toy milk truck"),
    "football": MeshAsset("soccerball/soccerball.obj", 0.0, "a black and white football"),
}
"""Vendored real objects by name. The truck stands side-on at azimuth 0: its cab toward -Y, on the left of the
reference image."""


@dataclass
class _Part:
    """Where one material's colour comes from: a texture, or vertex colours, times a base-colour factor."""

    factor: Tensor
    """(3,) base-colour factor in [0, 1]."""
    texture: Optional[Tensor]
    """(1, 3, H, W) base-colour texture in [0, 1], or None."""
    has_vertex_colours: bool
    """Whether the part's vertices carry colours."""


class MeshObject:
    """A placed, coloured triangle mesh with ray casting, colour and distance queries on world points (torch)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, face_part: np.ndarray, uv: np.ndarray,
                 vertex_colours: np.ndarray, parts: List[_Part]) -> None:
        import open3d as o3d
        import trimesh

        self.mesh = trimesh.Trimesh(vertices, faces, process=False)
        self.face_part = torch.from_numpy(face_part.astype(np.int64))
        self.faces = torch.from_numpy(faces.astype(np.int64))
        self.uv = torch.from_numpy(uv.astype(np.float32))
        self.vertex_colours = torch.from_numpy(vertex_colours.astype(np.float32))
        self.parts = parts
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))

    def intersect(self, origins: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """First hits of rays (unit `directions`): (hit (N,) bool, distance along the ray (N,), 0 where missed)."""
        import open3d as o3d

        rays = torch.cat([origins, directions], dim=-1).detach().cpu().float().numpy()
        t = torch.from_numpy(self.scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()).to(origins.device)
        hit = torch.isfinite(t)
        return hit, torch.where(hit, t, torch.zeros_like(t)).to(origins.dtype)

    def colour(self, points: Tensor) -> Tensor:
        """Base colour (..., 3) in [0, 1] of the surface at its points closest to `points` (..., 3)."""
        import open3d as o3d

        flat = points.reshape(-1, 3).detach().cpu().float().numpy()
        closest = self.scene.compute_closest_points(o3d.core.Tensor(flat))
        face = torch.from_numpy(closest["primitive_ids"].numpy().astype(np.int64))
        uv = torch.from_numpy(closest["primitive_uvs"].numpy())
        weights = torch.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], dim=-1)  # open3d's barycentrics
        corners = self.faces[face]
        colour = torch.ones(face.shape[0], 3)
        part_of = self.face_part[face]
        for index, part in enumerate(self.parts):
            mask = part_of == index
            if not mask.any():
                continue
            if part.texture is not None:
                texcoord = (self.uv[corners[mask]] * weights[mask, :, None]).sum(1)
                colour[mask] = bilinear(part.texture, texcoord)
            elif part.has_vertex_colours:
                colour[mask] = (self.vertex_colours[corners[mask]] * weights[mask, :, None]).sum(1)
            colour[mask] = colour[mask] * part.factor
        return colour.clamp(0.0, 1.0).reshape(*points.shape[:-1], 3).to(points)

    def sdf(self, points: Tensor) -> Tensor:
        """Signed distance (negative inside) of `points` (..., 3): open3d's exact distance, its sign by ray parity
        voted over several random rays, which stays right where an open mesh leaves a few rays a wrong count."""
        import open3d as o3d

        flat = o3d.core.Tensor(points.reshape(-1, 3).detach().cpu().float().numpy())
        distance = self.scene.compute_signed_distance(flat, nsamples=9).numpy()
        return torch.from_numpy(distance).reshape(points.shape[:-1]).to(points)

    def sample(self, count: int, seed: int = 0) -> Tensor:
        """`count` points uniform by area on the surface (trimesh's sampler)."""
        import trimesh

        points, _ = trimesh.sample.sample_surface(self.mesh, count, seed=seed)
        return torch.from_numpy(np.asarray(points, dtype=np.float32))


def bilinear(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of `texture` (1, 3, H, W) at texture coordinates `uv` (N, 2) (v up, repeating): (N, 3)."""
    wrapped = uv - torch.floor(uv)
    grid = torch.stack([wrapped[:, 0] * 2.0 - 1.0, (1.0 - wrapped[:, 1]) * 2.0 - 1.0], dim=-1)
    sampled = torch.nn.functional.grid_sample(texture, grid[None, None], mode="bilinear", padding_mode="border",
                                              align_corners=False)
    return sampled[0, :, 0].T


def split_spec(spec: str) -> Tuple[str, Optional[float]]:
    """`NAME_OR_PATH[@DEGREES]` -> (name or path, front azimuth or None)."""
    head, at, tail = spec.rpartition("@")
    if at:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, None


def is_mesh_spec(spec: str) -> bool:
    """Whether `spec` names a registered mesh asset or a mesh file (by its suffix or because it exists)."""
    name, _ = split_spec(spec)
    return name in MESH_ASSETS or Path(name).suffix.lower() in SUFFIXES or Path(name).is_file()


def _missing_textures(path: Path) -> List[str]:
    """Texture files an OBJ's material libraries name that are not beside them."""
    missing = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("mtllib "):
            library = path.parent / line.split(None, 1)[1].strip()
            if not library.is_file():
                missing.append(str(library))
                continue
            for entry in library.read_text(errors="replace").splitlines():
                words = entry.split()
                if words and words[0] == "map_Kd" and not (library.parent / words[-1]).is_file():
                    missing.append(str(library.parent / words[-1]))
    return missing


def _read_parts(path: Path):
    """The file's meshes, in the file's frame with the scene's transforms applied (one line on a bad file)."""
    import trimesh

    if not path.is_file():
        raise UserInputError(f"{path}: no such mesh file: give a .glb, .gltf, .obj or .ply file, or one of "
                             f"{', '.join(sorted(MESH_ASSETS))}")
    try:
        loaded = trimesh.load(str(path), force="scene", process=False)
    except Exception as error:  # trimesh raises many types on unreadable files
        raise UserInputError(f"{path} is not a mesh trimesh can read ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'no detail'}): give a .glb, .gltf, .obj "
                             "or .ply file") from None
    geometries = list(loaded.dump()) if isinstance(loaded, trimesh.Scene) else [loaded]
    clouds = [g for g in geometries if isinstance(g, trimesh.PointCloud)]
    meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    faces = sum(len(mesh.faces) for mesh in meshes)
    if not meshes and clouds:
        raise UserInputError(f"{path} is a point cloud ({sum(len(c.vertices) for c in clouds)} points, no faces): "
                             "give a mesh with faces (e.g. reconstruct one with open3d's Poisson surface)")
    if not meshes:
        raise UserInputError(f"{path} holds no faces (an empty mesh): give a mesh with at least one triangle")
    if faces > MAX_FACES:
        raise UserInputError(f"{path} has {faces:,} faces, over the limit of {MAX_FACES:,}: decimate it first "
                             "(e.g. open3d's simplify_quadric_decimation)")
    return meshes


def _part_colour(mesh) -> Tuple[_Part, np.ndarray, np.ndarray]:
    """A mesh's colour source and its per-vertex texture coordinates and colours."""
    count = len(mesh.vertices)
    uv = np.zeros((count, 2), np.float32)
    colours = np.ones((count, 3), np.float32)
    visual = mesh.visual
    factor, texture, has_colours = np.ones(3, np.float32), None, False
    if visual.kind in ("vertex", "face"):  # trimesh gives face colours as their vertices' means
        colours = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
        has_colours = True
    elif visual.kind == "texture":
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        base = getattr(material, "baseColorFactor", None)
        if base is None and image is None:
            base = getattr(material, "main_color", None)
        if base is not None:
            factor = np.asarray(base, np.float32)[:3] / (255.0 if np.asarray(base).dtype.kind in "ui" else 1.0)
        if image is not None and getattr(visual, "uv", None) is not None:
            pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
            texture = torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()
            uv = np.asarray(visual.uv, np.float32)
    return _Part(torch.from_numpy(factor), texture, has_colours), uv, colours


def placement(vertices: np.ndarray, y_up: bool, front: float) -> np.ndarray:
    """Vertices in the project's world: +Y up turned to +Z up when `y_up`, centred on the bounding box, scaled to
    `BOUND_RADIUS`, then turned about +Z so that the file's azimuth `front` faces azimuth 0 (+X)."""
    if y_up:  # a quarter turn about +X: (x, y, z) -> (x, -z, y)
        vertices = np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], axis=-1)
    vertices = vertices - (vertices.min(0) + vertices.max(0)) / 2.0
    vertices = vertices * (BOUND_RADIUS / np.linalg.norm(vertices, axis=-1).max())
    angle = np.radians(-front)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return vertices @ turn.T


def load_mesh_object(path: Path, front: float = 0.0) -> MeshObject:
    """The mesh file at `path` placed in the world (see the module's docstring). A texture its OBJ material names
    but that is missing gives a one-line warning and the material's base colour."""
    path = Path(path)
    meshes = _read_parts(path)
    if path.suffix.lower() == ".obj":
        for missing in _missing_textures(path):
            print(f"single-image-nerf: warning: {path} names the texture {missing}, which is missing: using the "
                  "material's base colour", file=sys.stderr)
    vertices, faces, face_part, uvs, colours, parts = [], [], [], [], [], []
    offset = 0
    for index, mesh in enumerate(meshes):
        part, uv, colour = _part_colour(mesh)
        vertices.append(np.asarray(mesh.vertices, np.float64))
        faces.append(np.asarray(mesh.faces, np.int64) + offset)
        face_part.append(np.full(len(mesh.faces), index))
        uvs.append(uv)
        colours.append(colour)
        parts.append(part)
        offset += len(mesh.vertices)
    placed = placement(np.concatenate(vertices), path.suffix.lower() in (".glb", ".gltf"), front)
    return MeshObject(placed, np.concatenate(faces), np.concatenate(face_part), np.concatenate(uvs),
                      np.concatenate(colours), parts)


def resolve_mesh_spec(spec: str) -> Tuple[Path, float, str]:
    """(file, front azimuth, caption) of `NAME_OR_PATH[@DEGREES]`."""
    name, front = split_spec(spec)
    if name in MESH_ASSETS:
        asset = MESH_ASSETS[name]
        return ASSET_DIR / asset.file, asset.front if front is None else front, asset.caption
    path = Path(name).expanduser()
    return path, 0.0 if front is None else front, f"a {path.stem.replace('_', ' ')}"
