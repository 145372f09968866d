"""Known objects: procedural textured shapes defined analytically, for proofs without pretrained weights.

Each object is a signed distance function plus a colour pattern, in the project's world convention (+Z up, the
object centred at the origin, its front facing +X, the reference azimuth 0). The renderer sphere-traces the SDF
from any nerfstudio `Cameras` and antialiases by supersampling, giving RGBA images (straight alpha) and depth.
The patterns are deliberately different front and back, so that a reconstruction that only copies the reference
view is caught on the back views.

Real objects are known objects too: a textured mesh file, or a vendored one by name (`mesh_objects.py`), brings its
own ray casting and surface sampler, and every function here renders and samples it like the procedural ones.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

SdfFn = Callable[[Tensor], Tensor]
ColourFn = Callable[[Tensor], Tensor]
IntersectFn = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]
SurfaceFn = Callable[[int, int], Tensor]


@dataclass(frozen=True)
class KnownObject:
    """A shape with an exact (or lower-bound) signed distance and an albedo pattern, both of world points."""

    name: str
    """Name used on the command line (`--known-object`)."""
    sdf: SdfFn
    """Signed distance of points (..., 3) -> (...); negative inside. Must never overestimate the distance."""
    colour: ColourFn
    """Albedo of surface points (..., 3) -> (..., 3) in [0, 1]."""
    bound_radius: float
    """Radius of a sphere about the origin that contains the whole object."""
    caption: str
    """A caption for the object, written beside its reference view."""
    intersect: Optional[IntersectFn] = None
    """First hits of rays (origins, unit directions) -> (hit, distance); None sphere-traces `sdf` (mesh objects
    cast rays)."""
    surface: Optional[SurfaceFn] = None
    """(count, seed) -> points uniform by area on the surface; None projects shell points along `sdf`."""


# ---------------------------------------------------------------------------------------------- SDF primitives


def sphere_sdf(points: Tensor, radius: float, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
    """Signed distance to a sphere."""
    return (points - points.new_tensor(centre)).norm(dim=-1) - radius


def round_box_sdf(points: Tensor, half_size: Sequence[float], rounding: float) -> Tensor:
    """Signed distance to an axis-aligned box with rounded edges (`half_size` includes the rounding)."""
    q = points.abs() - (points.new_tensor(half_size) - rounding)
    return q.clamp_min(0.0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0.0) - rounding


def torus_x_sdf(points: Tensor, major: float, minor: float) -> Tensor:
    """Signed distance to a torus whose axis is +X (it stands facing the reference camera)."""
    ring = torch.sqrt(points[..., 1] ** 2 + points[..., 2] ** 2) - major
    return torch.sqrt(ring**2 + points[..., 0] ** 2) - minor


def smooth_min(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Polynomial smooth minimum; applied to SDFs it is a lower bound of the blended distance (safe to trace)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _palette(rows: Sequence[Sequence[float]], index: Tensor, like: Tensor) -> Tensor:
    table = like.new_tensor(rows)
    return table[index.long() % len(rows)]


# ---------------------------------------------------------------------------------------------- the objects

_STRIPES = (
    (0.90, 0.10, 0.10),
    (0.95, 0.95, 0.95),
    (0.95, 0.75, 0.10),
    (0.10, 0.10, 0.10),
    (0.10, 0.35, 0.90),
    (0.95, 0.95, 0.95),
    (0.10, 0.75, 0.30),
    (0.55, 0.15, 0.70),
)
_BOX_FACES = (  # +X, -X, +Y, -Y, +Z, -Z
    (0.90, 0.15, 0.15),
    (0.10, 0.80, 0.80),
    (0.15, 0.75, 0.20),
    (0.80, 0.15, 0.75),
    (0.15, 0.25, 0.90),
    (0.95, 0.85, 0.15),
)
_BOX_HALF = (0.32, 0.40, 0.26)
_BLOB_CENTRES = ((0.12, -0.22, 0.06), (-0.12, 0.24, -0.06))
_BLOB_RADII = (0.33, 0.26)


def _striped_sphere_colour(points: Tensor) -> Tensor:
    azimuth = torch.atan2(points[..., 1], points[..., 0])
    index = torch.floor((azimuth + math.pi) / (2.0 * math.pi) * len(_STRIPES)).clamp(0, len(_STRIPES) - 1)
    return _palette(_STRIPES, index, points)


def _box_colour(points: Tensor) -> Tensor:
    scaled = points / points.new_tensor(_BOX_HALF)
    axis = scaled.abs().argmax(dim=-1)
    negative = torch.gather(scaled, -1, axis[..., None])[..., 0] < 0
    return _palette(_BOX_FACES, 2 * axis + negative.long(), points)


def _hue(hue: Tensor, saturation: float, value: float) -> Tensor:
    """HSV to RGB for a hue in turns, fixed saturation and value."""
    k = torch.stack([(5.0 + hue * 6.0) % 6.0, (3.0 + hue * 6.0) % 6.0, (1.0 + hue * 6.0) % 6.0], dim=-1)
    return value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _torus_colour(points: Tensor) -> Tensor:
    ring = torch.atan2(points[..., 2], points[..., 1]) / (2.0 * math.pi) + 0.5
    front = _hue(ring, 0.85, 0.95)
    segment = torch.floor(ring * 6.0) % 2
    back = torch.where(segment[..., None] > 0, points.new_tensor([0.15, 0.15, 0.20]), points.new_tensor([0.9, 0.9, 0.8]))
    return torch.where(points[..., :1] >= 0, front, back)


def _blob_sdf(points: Tensor) -> Tensor:
    first = sphere_sdf(points, _BLOB_RADII[0], _BLOB_CENTRES[0])
    second = sphere_sdf(points, _BLOB_RADII[1], _BLOB_CENTRES[1])
    return smooth_min(first, second, 0.12)


def _blob_colour(points: Tensor) -> Tensor:
    first = sphere_sdf(points, _BLOB_RADII[0], _BLOB_CENTRES[0])
    second = sphere_sdf(points, _BLOB_RADII[1], _BLOB_CENTRES[1])
    mix = torch.sigmoid((second - first) / 0.04)[..., None]
    colour = mix * points.new_tensor([0.95, 0.55, 0.10]) + (1.0 - mix) * points.new_tensor([0.10, 0.60, 0.65])
    band = (points[..., 2].abs() < 0.05) & (points[..., 0] < 0)
    return torch.where(band[..., None], points.new_tensor([0.95, 0.95, 0.95]), colour)


KNOWN_OBJECTS: Dict[str, KnownObject] = {
    obj.name: obj
    for obj in (
        KnownObject(
            "striped-sphere", lambda p: sphere_sdf(p, 0.5), _striped_sphere_colour, 0.51, "a sphere with coloured stripes"
        ),
        KnownObject(
            "box", lambda p: round_box_sdf(p, _BOX_HALF, 0.03), _box_colour, 0.6, "a box with differently coloured faces"
        ),
        KnownObject("torus", lambda p: torus_x_sdf(p, 0.38, 0.14), _torus_colour, 0.53, "a rainbow torus"),
        KnownObject("two-lobed-blob", _blob_sdf, _blob_colour, 0.63, "an orange and teal two-lobed blob"),
    )
}
"""Every known object by name."""


def known_object_names() -> List[str]:
    """Every name `get_known_object` takes besides a mesh file's path: the procedural objects and the meshes."""
    from single_image_nerf.mesh_objects import MESH_ASSETS

    return sorted(KNOWN_OBJECTS) + sorted(MESH_ASSETS)


def get_known_object(name: str) -> KnownObject:
    """The known object called `name`: a procedural one (`KNOWN_OBJECTS`), or a mesh, by a registered asset's name
    or a file's path, optionally followed by `@DEGREES`, the azimuth of the mesh that faces the reference camera
    (`single_image_nerf.mesh_objects`)."""
    from single_image_nerf.mesh_objects import is_mesh_spec

    if name in KNOWN_OBJECTS:
        return KNOWN_OBJECTS[name]
    if is_mesh_spec(name):
        return _mesh_known_object(name)
    raise ValueError(f"Unknown object {name!r}; choose one of {known_object_names()} or give a mesh file's path")


@functools.lru_cache(maxsize=8)
def _mesh_known_object(spec: str) -> KnownObject:
    from single_image_nerf.mesh_objects import BOUND_RADIUS, MESH_ASSETS, load_mesh_object, resolve_mesh_spec, \
        split_spec

    path, front, caption = resolve_mesh_spec(spec)
    mesh = load_mesh_object(path, front)
    name, given = split_spec(spec)
    if name not in MESH_ASSETS:  # a data folder's meta.json names it: a path that reads from anywhere
        name = str(path.resolve()) + (f"@{given:g}" if given is not None else "")
    else:
        name = spec
    return KnownObject(name, mesh.sdf, mesh.colour, BOUND_RADIUS * 1.01, caption, intersect=mesh.intersect,
                       surface=mesh.sample)


# ---------------------------------------------------------------------------------------------- rendering


def sphere_trace(
    obj: KnownObject,
    origins: Float[Tensor, "N 3"],
    directions: Float[Tensor, "N 3"],
    max_steps: int = 128,
    epsilon: float = 1e-4,
) -> Tuple[Tensor, Tensor]:
    """Sphere-trace rays (unit `directions`) against `obj`: (hit (N,) bool, distance along the ray (N,)).

    Rays start where they enter the object's bounding sphere; converged and escaped rays are dropped from the
    working set as they finish, so the cost follows the rays still marching.
    """
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - obj.bound_radius**2
    disc = b * b - c
    crosses = disc > 0
    root = disc.clamp_min(0.0).sqrt()
    t = (-b - root).clamp_min(0.0)
    t_far = -b + root
    hit = torch.zeros_like(crosses)
    active = torch.nonzero(crosses, as_tuple=True)[0]
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        distance = obj.sdf(origins[active] + t[active, None] * directions[active])
        t[active] = t[active] + distance
        converged = distance < epsilon * (1.0 + t[active])
        hit[active[converged]] = True
        active = active[~converged & (t[active] < t_far[active])]
    # Rays that ran out of steps close to the surface (grazing the silhouette) count as hits.
    if active.numel() > 0:
        close = obj.sdf(origins[active] + t[active, None] * directions[active]).abs() < 1e-3
        hit[active[close]] = True
    return hit, t


@torch.no_grad()
def render_known_object(
    obj: KnownObject,
    cameras,
    supersample: int = 2,
    max_steps: int = 128,
) -> Dict[str, Tensor]:
    """Render `obj` from every camera of `cameras` (all of one size), on the cameras' device.

    Returns `rgba` (B, H, W, 4) with straight alpha in [0, 1] (alpha is pixel coverage), `depth` (B, H, W), the
    z-depth along each camera's viewing axis averaged over the covered part of the pixel (0 where nothing is hit),
    and `distance` (B, H, W), the same as distance along the ray. `supersample` s traces s x s rays per pixel.
    """
    cameras = cameras.flatten() if len(cameras.shape) > 1 else cameras
    if len(cameras.shape) == 0:
        cameras = cameras.reshape((1,))
    fine = _copy_cameras(cameras)
    if supersample > 1:
        fine.rescale_output_resolution(supersample)
    outputs: Dict[str, List[Tensor]] = {"rgba": [], "depth": [], "distance": []}
    for index in range(fine.shape[0]):
        rays = fine.generate_rays(camera_indices=index, keep_shape=True)
        height, width = rays.origins.shape[:2]
        origins = rays.origins.reshape(-1, 3).float()
        directions = torch.nn.functional.normalize(rays.directions.reshape(-1, 3).float(), dim=-1)
        if obj.intersect is not None:
            hit, t = obj.intersect(origins, directions)
        else:
            hit, t = sphere_trace(obj, origins, directions, max_steps=max_steps)
        points = origins + t[:, None] * directions
        colour = torch.zeros_like(points)
        colour[hit] = obj.colour(points[hit]).to(colour.dtype)
        forward = -fine.camera_to_worlds[index, :3, 2].to(directions)
        coverage = hit.float()
        layers = torch.cat(
            [colour * coverage[:, None], coverage[:, None], (t * (directions @ forward) * coverage)[:, None],
             (t * coverage)[:, None]],
            dim=-1,
        )
        layers = layers.reshape(1, height, width, 6).permute(0, 3, 1, 2)
        if supersample > 1:
            layers = torch.nn.functional.avg_pool2d(layers, supersample)
        layers = layers[0].permute(1, 2, 0)
        alpha = layers[..., 3:4]
        safe = alpha.clamp_min(1e-8)
        rgb = torch.where(alpha > 0, layers[..., :3] / safe, torch.zeros_like(layers[..., :3])).clamp(0.0, 1.0)
        outputs["rgba"].append(torch.cat([rgb, alpha], dim=-1))
        outputs["depth"].append(torch.where(alpha[..., 0] > 0, layers[..., 4] / safe[..., 0], 0.0))
        outputs["distance"].append(torch.where(alpha[..., 0] > 0, layers[..., 5] / safe[..., 0], 0.0))
    return {key: torch.stack(value) for key, value in outputs.items()}


def _copy_cameras(cameras):
    from nerfstudio.cameras.cameras import Cameras

    return Cameras(
        camera_to_worlds=cameras.camera_to_worlds.clone(),
        fx=cameras.fx.clone(),
        fy=cameras.fy.clone(),
        cx=cameras.cx.clone(),
        cy=cameras.cy.clone(),
        width=cameras.width.clone(),
        height=cameras.height.clone(),
        camera_type=cameras.camera_type.clone(),
    )


def composite(rgba: Float[Tensor, "*batch 4"], background: Union[Sequence[float], Tensor]) -> Tensor:
    """Straight-alpha RGBA over a solid background colour: (..., 3)."""
    background = torch.as_tensor(background, dtype=rgba.dtype, device=rgba.device)
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + background * (1.0 - alpha)


# ---------------------------------------------------------------------------------------------- geometry


def _sdf_gradient(obj: KnownObject, points: Tensor, step: float = 1e-4) -> Tensor:
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * step
    columns = [(obj.sdf(points + offsets[i]) - obj.sdf(points - offsets[i])) / (2.0 * step) for i in range(3)]
    return torch.stack(columns, dim=-1)


def sample_surface(
    obj: KnownObject, count: int, seed: int = 0, shell: float = 0.02, device: Union[str, torch.device] = "cpu"
) -> Float[Tensor, "count 3"]:
    """`count` points on the surface of `obj`, close to uniform by area: points drawn uniformly in a thin shell
    around the surface (whose volume is proportional to area) are projected onto it along the SDF gradient; a mesh
    object samples its own triangles."""
    if obj.surface is not None:
        return obj.surface(count, seed).to(device)
    generator = torch.Generator().manual_seed(seed)
    found: List[Tensor] = []
    total = 0
    while total < count:
        candidates = (torch.rand(max(4 * count, 4096), 3, generator=generator) * 2.0 - 1.0) * obj.bound_radius
        candidates = candidates[obj.sdf(candidates).abs() < shell]
        for _ in range(6):  # Newton steps along the gradient (not unit length where SDFs are blended)
            gradient = _sdf_gradient(obj, candidates)
            step = obj.sdf(candidates) / (gradient * gradient).sum(-1).clamp_min(1e-6)
            candidates = candidates - step[:, None] * gradient
        found.append(candidates)
        total += candidates.shape[0]
    return torch.cat(found)[:count].to(device)


# ---------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ReferenceView:
    """Where the reference camera of a known-object folder stands (degrees and world units)."""

    azimuth: float = 0.0
    """Azimuth of the reference camera (the object's front faces +X, azimuth 0)."""
    elevation: float = 0.0
    """Elevation of the reference camera above the XY plane."""
    radius: float = 2.5
    """Distance of the reference camera from the origin (the dataparser's default)."""
    fov: float = 40.0
    """Vertical field of view of the reference camera (the dataparser's default)."""
    size: int = 128
    """Width and height of the reference image in pixels."""


def reference_cameras(view: ReferenceView, size: Optional[int] = None):
    """The single nerfstudio camera of `view` (optionally at another square size)."""
    from single_image_nerf.data.camera_sampling import orbit_cameras

    size = size or view.size
    return orbit_cameras(
        torch.tensor([view.azimuth]), torch.tensor([view.elevation]), torch.tensor([view.radius]),
        torch.tensor([view.fov]), size, size, reference_azimuth=view.azimuth,
    )


def write_reference_folder(obj: KnownObject, folder: Path, view: ReferenceView = ReferenceView()) -> Path:
    """Write the reference view of `obj` as a preprocessed data folder the dataparser reads: `rgba.png`,
    `depth.npy` (H, W float32 z-depth in world units, 0 on the background), `caption.txt` and `meta.json`
    (the camera, plus `known_object` so evaluation can find the ground truth)."""
    import imageio.v3 as iio
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rendered = render_known_object(obj, reference_cameras(view), supersample=4)
    rgba = (rendered["rgba"][0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    iio.imwrite(folder / "rgba.png", rgba)
    np.save(folder / "depth.npy", rendered["depth"][0].numpy().astype(np.float32))
    (folder / "caption.txt").write_text(obj.caption + "\n")
    meta = {
        "azimuth": view.azimuth,
        "elevation": view.elevation,
        "radius": view.radius,
        "fov": view.fov,
        "depth_convention": "depth",
        "depth_note": "z-depth along the camera axis in world units, 0 on the background",
        "known_object": obj.name,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def write_reference_views_folder(obj: KnownObject, folder: Path, azimuths: Sequence[float],
                                 view: ReferenceView = ReferenceView()) -> Path:
    """Write reference views of `obj` from the cameras at `azimuths` (absolute degrees, the first the main view;
    `view` gives the rest of each camera) as the several-photo data folder sin-preprocess writes (docs/inputs.md):
    the main view's `write_reference_folder` files at the top, view i in `views/i/` (its own rgba.png, depth.npy
    and meta.json with `azimuth_deg` and `elevation_deg`), and the top meta.json's `views` list, main first, with
    azimuths relative to the main view's. One azimuth writes a one-photo folder."""
    from dataclasses import replace

    from single_image_nerf.preprocess.views import VIEWS_KEY, view_folder

    folder = Path(folder)
    if not azimuths:
        raise ValueError("write_reference_views_folder needs at least one azimuth")
    write_reference_folder(obj, folder, replace(view, azimuth=float(azimuths[0])))
    if len(azimuths) == 1:
        return folder
    listed = []
    for index, azimuth in enumerate(azimuths):
        relative = float((azimuth - azimuths[0]) % 360.0)
        listed.append({"folder": view_folder(index), "azimuth_deg": relative, "elevation_deg": view.elevation})
        if index == 0:
            continue
        sub = folder / view_folder(index)
        write_reference_folder(obj, sub, replace(view, azimuth=float(azimuth)))
        (sub / "caption.txt").unlink()  # the caption is the object's, only at the top
        meta = json.loads((sub / "meta.json").read_text())
        meta.update({"azimuth_deg": relative, "elevation_deg": view.elevation})
        (sub / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    meta = json.loads((folder / "meta.json").read_text())
    meta[VIEWS_KEY] = listed
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def write_posed_views(obj: KnownObject, folder: Path, cameras, points: int = 0) -> Path:
    """Write renders of `obj` at `cameras` as a posed-image folder: `transforms.json` (nerfstudio's format, with
    per-frame intrinsics and OpenGL camera-to-world matrices in the project's world) and RGBA pngs; with
    `points` > 0 also `points.npy`, that many surface points, for geometry metrics."""
    import imageio.v3 as iio
    import numpy as np

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rendered = render_known_object(obj, cameras, supersample=4)
    frames = []
    for index in range(cameras.shape[0]):
        name = f"images/frame_{index:03d}.png"
        iio.imwrite(folder / name, (rendered["rgba"][index].numpy() * 255.0 + 0.5).astype(np.uint8))
        matrix = torch.eye(4)
        matrix[:3] = cameras.camera_to_worlds[index].cpu()
        frames.append(
            {
                "file_path": name,
                "transform_matrix": matrix.tolist(),
                "fl_x": float(cameras.fx[index]),
                "fl_y": float(cameras.fy[index]),
                "cx": float(cameras.cx[index]),
                "cy": float(cameras.cy[index]),
                "w": int(cameras.width[index]),
                "h": int(cameras.height[index]),
            }
        )
    (folder / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "frames": frames}, indent=2))
    if points > 0:
        np.save(folder / "points.npy", sample_surface(obj, points).numpy())
    return folder
