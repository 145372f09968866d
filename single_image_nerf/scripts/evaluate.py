"""`sin-evaluate`: score a trained run (coarse or refine) against a ground truth, as a table and as JSON.

The ground truth is a known object (rendered by the project at any camera) or a folder of posed images
(`transforms.json` in nerfstudio's format, cameras in the project's world, optional `points.npy` surface points).
Image metrics (PSNR, SSIM, LPIPS and CLIP similarity where their weights are on this machine) are reported at the
reference view and at held-out views around the object, with means over all held-out views and over the front
(within 90 degrees of the reference azimuth) and back halves. Geometry: points back-projected from the run's depth
where its opacity exceeds one half, seen from cameras spread over the sphere, against points on the true surface
(Chamfer distance and F-score).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from single_image_nerf import metrics as M
from single_image_nerf.pretrained import CLIP_METRIC_ID
from single_image_nerf.errors import UserInputError, run_command
from single_image_nerf.data.camera_sampling import fov_from_focal, orbit_cameras, pose_angles
from single_image_nerf.mesh.source import is_splat_model, sphere_cameras
from single_image_nerf.known_objects import KnownObject, composite, get_known_object, render_known_object, \
    sample_surface

IMAGE_METRICS = ("psnr", "ssim", "lpips", "clip")
"""Image metrics in report order; lpips is lower-better, the others higher-better."""
REFERENCE_AZIMUTH_TOLERANCE = 1.0
"""Held-out views of a several-photo run within this many degrees of azimuth of a reference photo's camera are left
out: that side was given, not recovered."""


@dataclass
class EvaluateConfig:
    """Evaluate a run against a known object or posed images."""

    load_config: Path
    """config.yml of the run (outputs/<name>/<method>/<time>/config.yml)."""
    known_object: Optional[str] = None
    """Name of the known object, or a mesh file's path (.glb, .gltf, .obj, .ply; `PATH@DEGREES` turns the mesh so
    that its azimuth DEGREES faces the reference camera); None reads `known_object` from the run's meta.json."""
    posed_images: Optional[Path] = None
    """Folder with transforms.json and images (and optionally points.npy): used instead of a known object."""
    num_views: int = 8
    """Held-out views around the object (known objects), evenly spaced in azimuth, none at the reference."""
    elevation: Optional[float] = None
    """Elevation of the held-out views in degrees; None uses the reference camera's."""
    resolution: Optional[int] = None
    """Side of the held-out renders in pixels; None uses the reference image's size."""
    geometry_views: int = 12
    """Cameras spread over the sphere whose depth is back-projected into the run's points (0 skips geometry)."""
    geometry_resolution: int = 64
    """Side of the geometry renders in pixels."""
    num_points: int = 20000
    """Points kept on each side for the Chamfer distance and F-score."""
    f_score_threshold: float = 0.05
    """Distance threshold of the F-score, world units (the scene box is [-1, 1]^3 by default)."""
    supersample: int = 1
    """Rays per pixel side of the run's renders for the image metrics: 1 scores a plain render (one ray per pixel);
    4 integrates each pixel over its area like the ground truth of a known object (4 x 4 rays), which compares
    like with like and removes the aliasing bound of small renders."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background both the run's renders and the ground truth are composited over."""
    clip_model: str = CLIP_METRIC_ID
    """CLIP weights (local folder, or a hub id already in the local cache) for the CLIP similarity."""
    output_json: Optional[Path] = None
    """Where to write the report as JSON."""
    seed: int = 0
    """Seed of the surface-point sampling."""
    mesh: Optional[Path] = None
    """A mesh exported from the run (sin-export-mesh: .glb, .obj or .ply) to score in the model's place, at the same
    cameras against the same truth; the mesh is drawn by ray casting with 4 x 4 rays per pixel."""


# ----------------------------------------------------------------------------------------------------- cameras


def reference_camera(pipeline) -> Any:
    """The run's single reference camera (from its dataparser outputs)."""
    datamanager = pipeline.datamanager
    outputs = getattr(datamanager, "train_dataparser_outputs", None)
    if outputs is not None:
        return outputs.cameras[0:1]
    return datamanager.train_dataset.cameras[0:1]


def camera_orbit(camera) -> Dict[str, float]:
    """(azimuth, elevation, radius, fov) of one orbit camera, as floats."""
    azimuth, elevation, radius = pose_angles(camera.camera_to_worlds)
    fov = fov_from_focal(camera.fy.reshape(-1)[0], int(camera.height.reshape(-1)[0]))
    return {"azimuth": float(azimuth.reshape(-1)[0]), "elevation": float(elevation.reshape(-1)[0]),
            "radius": float(radius.reshape(-1)[0]), "fov": float(fov)}


def held_out_azimuth_offsets(count: int) -> Tensor:
    """Azimuths relative to the reference, evenly spaced and half a step away from it: 360 (k + 1/2) / count."""
    return (torch.arange(count, dtype=torch.float32) + 0.5) * (360.0 / count)


def held_out_cameras(reference, count: int, elevation: Optional[float], resolution: Optional[int]):
    """`count` orbit cameras around the object at the reference radius and field of view."""
    orbit = camera_orbit(reference)
    size = resolution or int(reference.height.reshape(-1)[0])
    azimuth = orbit["azimuth"] + held_out_azimuth_offsets(count)
    elevation = orbit["elevation"] if elevation is None else elevation
    return orbit_cameras(azimuth, torch.full((count,), elevation), torch.full((count,), orbit["radius"]),
                         torch.full((count,), orbit["fov"]), size, size, reference_azimuth=orbit["azimuth"])


def photo_azimuths(pipeline) -> List[float]:
    """Azimuths (degrees) of every reference camera of a several-photo run, main first; empty for one photo (its
    held-out views never meet the reference: they lie half a step from it)."""
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    views = outputs.metadata.get("reference_views") if outputs is not None else None
    return [float(view["azimuth"]) for view in views] if views else []


def away_from(cameras, azimuths: List[float], tolerance: float = REFERENCE_AZIMUTH_TOLERANCE) -> List[int]:
    """Indices of the cameras whose azimuth is more than `tolerance` degrees from every one of `azimuths`."""
    if not azimuths:
        return list(range(cameras.shape[0]))
    distance = torch.stack([azimuth_offset(cameras, azimuth).abs().reshape(-1) for azimuth in azimuths]).amin(0)
    return [index for index, value in enumerate(distance.tolist()) if value > tolerance]


def held_out_away_from_photos(reference, count: int, elevation: Optional[float], resolution: Optional[int],
                              azimuths: List[float]):
    """`held_out_cameras` less those at one of the photos' `azimuths` (`away_from`); None when none is left (or
    `count` is 0: the reference and the geometry are scored alone)."""
    if count == 0:
        return None
    cameras = held_out_cameras(reference, count, elevation, resolution)
    kept = away_from(cameras, azimuths)
    if len(kept) == cameras.shape[0]:
        return cameras
    return cameras[torch.tensor(kept, dtype=torch.long)] if kept else None


def azimuth_offset(cameras, reference_azimuth: float) -> Tensor:
    """Azimuth of each camera relative to the reference, wrapped to (-180, 180]."""
    azimuth, _, _ = pose_angles(cameras.camera_to_worlds)
    return -torch.remainder(-(azimuth - reference_azimuth) + 180.0, 360.0) + 180.0


# ----------------------------------------------------------------------------------------------- ground truth


@dataclass
class PosedImages:
    """A folder of posed ground-truth images (straight-alpha RGBA) and optional surface points."""

    cameras: Any
    """nerfstudio Cameras of the frames."""
    rgba: List[Tensor]
    """(H, W, 4) images in [0, 1], one per frame (alpha 1 where the file has none)."""
    points: Optional[np.ndarray]
    """(N, 3) surface points, if the folder has points.npy."""


def read_posed_images(folder: Path) -> PosedImages:
    """Read transforms.json (per-frame or shared fl_x, fl_y, cx, cy, w, h; OpenGL camera-to-world matrices in
    the project's world) and its images."""
    import imageio.v3 as iio
    from nerfstudio.cameras.cameras import Cameras, CameraType

    folder = Path(folder)
    meta = json.loads((folder / "transforms.json").read_text())
    rows: Dict[str, List[float]] = {key: [] for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    matrices, images = [], []
    for frame in meta["frames"]:
        image = torch.from_numpy(iio.imread(folder / frame["file_path"]).astype(np.float32) / 255.0)
        if image.shape[-1] == 3:
            image = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
        images.append(image)
        height, width = image.shape[:2]
        defaults = {"w": width, "h": height, "cx": width / 2.0, "cy": height / 2.0}
        if "camera_angle_x" in meta:
            defaults["fl_x"] = defaults["fl_y"] = 0.5 * width / math.tan(0.5 * meta["camera_angle_x"])
        for key in rows:
            rows[key].append(float(frame.get(key, meta.get(key, defaults.get(key)))))
        matrices.append(torch.tensor(frame["transform_matrix"], dtype=torch.float32)[:3])
    column = {key: torch.tensor(value)[:, None] for key, value in rows.items()}
    cameras = Cameras(
        camera_to_worlds=torch.stack(matrices), fx=column["fl_x"], fy=column["fl_y"], cx=column["cx"],
        cy=column["cy"], width=column["w"].long(), height=column["h"].long(), camera_type=CameraType.PERSPECTIVE,
    )
    points = np.load(folder / "points.npy") if (folder / "points.npy").is_file() else None
    return PosedImages(cameras=cameras, rgba=images, points=points)


def checked_posed_images(folder: Path) -> PosedImages:
    """`read_posed_images`, with one line naming the folder, the file and the problem when the folder cannot be read
    (no transforms.json, not UTF-8 JSON, no frames, a missing or unreadable image, a matrix that is not 4x4 or 3x4,
    no focal length, a points.npy that is not an (N, 3) array)."""
    folder = Path(folder)
    transforms = folder / "transforms.json"
    fix = "give a folder with transforms.json in nerfstudio's format and the images it names"
    if not transforms.is_file():
        raise UserInputError(f"--posed-images {folder} has no transforms.json: {fix}")
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UserInputError(f"{transforms} is not UTF-8 JSON ({str(error)[:100]}): {fix}") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise UserInputError(f"{transforms} lists no frames (a non-empty \"frames\" list is needed): {fix}")
    for index, frame in enumerate(frames):
        name = frame.get("file_path") if isinstance(frame, dict) else None
        if not isinstance(name, str) or not (folder / name).is_file():
            raise UserInputError(f"{transforms} frame {index}: image {name!r} is not a file in {folder}: {fix}")
        matrix = np.asarray(frame.get("transform_matrix"), dtype=object)
        if matrix.shape not in ((4, 4), (3, 4)):
            raise UserInputError(f"{transforms} frame {index}: transform_matrix has shape {matrix.shape}, not 4x4: "
                                 f"{fix}")
        if not any(key in frame or key in meta for key in ("fl_x", "camera_angle_x")):
            raise UserInputError(f"{transforms} frame {index} has no focal length (fl_x, fl_y or camera_angle_x): "
                                 f"{fix}")
    try:
        posed = read_posed_images(folder)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, SyntaxError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise UserInputError(f"--posed-images {folder} cannot be read ({type(error).__name__}: {first}): {fix}") from None
    cameras = posed.cameras
    if not bool(torch.isfinite(cameras.camera_to_worlds).all() and torch.isfinite(cameras.fx).all()
                and (cameras.fx > 0).all() and (cameras.fy > 0).all()):
        raise UserInputError(f"{transforms} holds non-finite or non-positive camera values: {fix}")
    if posed.points is not None and (posed.points.ndim != 2 or posed.points.shape[-1] != 3
                                     or not np.isfinite(posed.points).all()):
        raise UserInputError(f"{folder / 'points.npy'} is not an (N, 3) array of finite points: {fix}")
    return posed


def known_object_of_run(pipeline, name: Optional[str]) -> Optional[KnownObject]:
    """The known object named `name`, else the one named in the run's data folder meta.json, else None."""
    if name is not None:
        return get_known_object(name)
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    data_dir = outputs.metadata.get("data_dir") if outputs is not None else None
    if data_dir is not None and (Path(data_dir) / "meta.json").is_file():
        found = json.loads((Path(data_dir) / "meta.json").read_text()).get("known_object")
        if found is not None:
            return get_known_object(found)
    return None


def reference_truth(pipeline) -> Optional[Tensor]:
    """The reference image the run was trained on, (H, W, 4) straight alpha, if the datamanager has it."""
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    rgba = outputs.metadata.get("rgba") if outputs is not None else None
    return None if rgba is None else torch.as_tensor(rgba, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------- the run


@torch.no_grad()
def render_run(model, cameras, background: Tuple[float, float, float], supersample: int = 1) -> Dict[str, Tensor]:
    """Render the run at each camera: "rgb" (B, 3, H, W) recomposited over `background` (exact when the model
    reports its own background), "accumulation" (B, H, W) and "distance" (B, H, W) along unit rays. With
    `supersample` s, each pixel is the mean of s x s rays (the camera rendered at s times its size, box-filtered)."""
    normals_were = getattr(model, "eval_normals", None)
    if normals_were is not None:
        model.eval_normals = False  # scores need colour, opacity and depth alone: skip the normals' pass
    try:
        return _render_cameras(model, cameras, background, supersample)
    finally:
        if normals_were is not None:
            model.eval_normals = normals_were


def _render_cameras(model, cameras, background: Tuple[float, float, float], supersample: int) -> Dict[str, Tensor]:
    target = torch.tensor(background, dtype=torch.float32)
    splat = is_splat_model(model)
    rgbs, accumulations, distances = [], [], []
    for index in range(cameras.shape[0]):
        camera = cameras[index : index + 1].to(model.device)
        if supersample > 1:
            camera = copy.deepcopy(camera)
            camera.rescale_output_resolution(supersample)
        outputs = model.get_outputs_for_camera(camera)
        if supersample > 1:
            outputs = {name: _box_filter(outputs[name], supersample) for name in ("rgb", "accumulation", "depth",
                                                                                    "background") if name in outputs}
        rgb = outputs["rgb"].float().cpu()
        accumulation = outputs["accumulation"].float().cpu().reshape(rgb.shape[:2] + (1,))
        if "background" in outputs:
            rgb = rgb + (1.0 - accumulation) * (target - outputs["background"].float().cpu())
        depth = outputs["depth"].float().cpu().reshape(rgb.shape[:2])
        if splat:  # splatfacto renders z-depth: turn it into distance along the ray
            rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
            directions = torch.nn.functional.normalize(rays.directions, dim=-1)
            depth = depth / (directions @ -cameras.camera_to_worlds[index, :3, 2]).clamp_min(1e-6)
        rgbs.append(rgb.clamp(0.0, 1.0).permute(2, 0, 1))
        accumulations.append(accumulation[..., 0])
        distances.append(depth)
    return {"rgb": torch.stack(rgbs), "accumulation": torch.stack(accumulations), "distance": torch.stack(distances)}


def _box_filter(image: Tensor, factor: int) -> Tensor:
    """Mean over factor x factor blocks of an (H, W, C) image; anything else (a background colour) unchanged."""
    if image.dim() != 3:
        return image
    pooled = torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None].float(), factor)
    return pooled[0].permute(1, 2, 0)


def depth_points(cameras, distance: Tensor, accumulation: Tensor, threshold: float = 0.5) -> Tensor:
    """World points origin + distance * unit direction at the pixels whose opacity exceeds `threshold`."""
    points = []
    for index in range(cameras.shape[0]):
        rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
        directions = torch.nn.functional.normalize(rays.directions, dim=-1)
        world = rays.origins + distance[index, ..., None] * directions
        points.append(world[accumulation[index] > threshold])
    return torch.cat(points) if points else torch.zeros(0, 3)


def _subsample(points: np.ndarray, count: int, seed: int) -> np.ndarray:
    if points.shape[0] <= count:
        return points
    return points[np.random.default_rng(seed).choice(points.shape[0], count, replace=False)]


# --------------------------------------------------------------------------------------------------- scoring


class ImageScorer:
    """PSNR and SSIM always; LPIPS and CLIP similarity when their weights are on this machine."""

    def __init__(self, clip_model: Optional[str]) -> None:
        self.lpips = M.load_lpips()
        self.clip = M.load_clip_similarity(clip_model) if clip_model else None

    def __call__(self, pred: Tensor, target: Tensor) -> Dict[str, List[Optional[float]]]:
        scores: Dict[str, List[Optional[float]]] = {
            "psnr": M.psnr(pred, target).tolist(),
            "ssim": M.ssim(pred, target).tolist(),
        }
        for name, metric in (("lpips", self.lpips), ("clip", self.clip)):
            scores[name] = metric(pred, target).tolist() if metric is not None else [None] * pred.shape[0]
        return scores


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def summarise(views: List[Dict[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Means of each image metric over the reference, all held-out views, and their front and back halves."""
    groups = {
        "reference": [v for v in views if v["name"] == "reference"],
        "held_out": [v for v in views if v["name"] != "reference"],
        "front": [v for v in views if v["name"] != "reference" and abs(v["azimuth_offset"]) <= 90.0],
        "back": [v for v in views if v["name"] != "reference" and abs(v["azimuth_offset"]) > 90.0],
    }
    return {group: {metric: _mean([v[metric] for v in members]) for metric in IMAGE_METRICS}
            for group, members in groups.items()}


def evaluate_pipeline(pipeline, config: EvaluateConfig, scorer: Optional[ImageScorer] = None) -> Dict[str, Any]:
    """Score a loaded pipeline (training or inference mode) against the configured ground truth."""
    scorer = scorer or ImageScorer(config.clip_model)
    model = pipeline.model
    was_training = model.training
    model.eval()
    try:
        return _evaluate(pipeline, model, config, scorer)
    finally:
        model.train(was_training)


class NoGroundTruth(ValueError):
    """Neither a known object nor posed images to compare with."""


def _evaluate(pipeline, model, config: EvaluateConfig, scorer: ImageScorer) -> Dict[str, Any]:
    background = config.background
    reference = reference_camera(pipeline).to("cpu")
    reference_azimuth = camera_orbit(reference)["azimuth"]
    posed = read_posed_images(config.posed_images) if config.posed_images is not None else None
    obj = None if posed is not None else known_object_of_run(pipeline, config.known_object)
    if posed is None and obj is None:
        raise NoGroundTruth("no ground truth: pass --known-object NAME or --posed-images DIR")

    views: List[Dict[str, Any]] = []

    def score(name_prefix: str, cameras, truth_rgba: Tensor) -> None:
        rendered = render_run(model, cameras, background, config.supersample)
        truth = composite(truth_rgba, background).permute(0, 3, 1, 2)
        scores = scorer(rendered["rgb"], truth)
        offsets = azimuth_offset(cameras, reference_azimuth)
        _, elevations, _ = pose_angles(cameras.camera_to_worlds)
        for index in range(cameras.shape[0]):
            name = name_prefix if name_prefix == "reference" else f"{name_prefix}{float(offsets[index]):+.1f}"
            views.append({"name": name, "azimuth_offset": float(offsets[index]),
                          "elevation": float(elevations[index]),
                          **{metric: scores[metric][index] for metric in IMAGE_METRICS}})

    reference_rgba = reference_truth(pipeline)
    if reference_rgba is None or tuple(reference_rgba.shape[:2]) != (int(reference.height), int(reference.width)):
        reference_rgba = render_known_object(obj, reference, supersample=4)["rgba"][0] if obj else None
    if reference_rgba is not None:
        score("reference", reference, reference_rgba[None])
    references = photo_azimuths(pipeline)  # several photos: no held-out view at a photo's azimuth
    if posed is not None:
        for index in away_from(posed.cameras, references):
            score("azimuth ", posed.cameras[index : index + 1], posed.rgba[index][None])
    else:
        cameras = held_out_away_from_photos(reference, config.num_views, config.elevation, config.resolution,
                                            references)
        if cameras is not None:
            score("azimuth ", cameras, render_known_object(obj, cameras, supersample=4)["rgba"])
    held_out = [view for view in views if view["name"] != "reference"]
    if references and (posed is not None or config.num_views) and not held_out:
        listed = ", ".join(f"{azimuth:g}" for azimuth in references)
        raise UserInputError(f"every held-out view lies at a reference photo's azimuth ({listed}): choose another "
                             "--num-views")

    report: Dict[str, Any] = {
        "run": str(config.load_config),
        "ground_truth": obj.name if obj is not None else str(config.posed_images),
        "background": list(background),
        "views": views,
        "reference_azimuths": references,
        "summary": summarise(views),
        "geometry": geometry_report(pipeline, model, reference, obj, posed, config),
    }
    return report


def geometry_report(pipeline, model, reference, obj, posed, config: EvaluateConfig) -> Dict[str, Any]:
    """Chamfer distance and F-score of the run's back-projected points against the true surface."""
    truth = None
    if obj is not None:
        truth = sample_surface(obj, config.num_points, seed=config.seed).numpy()
    elif posed is not None and posed.points is not None:
        truth = np.asarray(posed.points, dtype=np.float64)
    if truth is None or config.geometry_views <= 0:
        return {"chamfer": None, "f_score": None, "precision": None, "recall": None, "points": 0,
                "threshold": config.f_score_threshold}
    cameras = sphere_cameras(reference, config.geometry_views, config.geometry_resolution)
    rendered = render_run(model, cameras, config.background)
    points = depth_points(cameras, rendered["distance"], rendered["accumulation"]).numpy()
    result: Dict[str, Any] = {"points": int(points.shape[0]), "threshold": config.f_score_threshold}
    if points.shape[0] == 0:
        return {**result, "chamfer": None, "f_score": 0.0, "precision": 0.0, "recall": 0.0}
    points = _subsample(points, config.num_points, config.seed)
    truth = _subsample(truth, config.num_points, config.seed)
    return {**result, "chamfer": M.chamfer_distance(points, truth), **M.f_score(points, truth, config.f_score_threshold)}


# ----------------------------------------------------------------------------------------------------- output


def _format(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def print_report(report: Dict[str, Any]) -> None:
    """Print the report as rich tables: per view, the group means, and the geometry."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{report['run']} vs {report['ground_truth']}")
    for column in ("view", "elevation", "PSNR", "SSIM", "LPIPS", "CLIP"):
        table.add_column(column, justify="left" if column == "view" else "right")
    for view in report["views"]:
        table.add_row(view["name"], f"{view['elevation']:.1f}", _format(view["psnr"], 2), _format(view["ssim"]),
                      _format(view["lpips"]), _format(view["clip"]))
    table.add_section()
    for group, values in report["summary"].items():
        table.add_row(f"mean: {group}", "", _format(values["psnr"], 2), _format(values["ssim"]),
                      _format(values["lpips"]), _format(values["clip"]))
    console.print(table)
    geometry = report["geometry"]
    shape = Table(title=f"geometry ({geometry['points']} points, F-score at {geometry['threshold']})")
    for column in ("Chamfer", "F-score", "precision", "recall"):
        shape.add_column(column, justify="right")
    shape.add_row(_format(geometry["chamfer"], 4), _format(geometry["f_score"]), _format(geometry["precision"]),
                  _format(geometry["recall"]))
    console.print(shape)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_report(report: Dict[str, Any], path: Path) -> None:
    """Write the report as JSON (missing metrics are null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # renamed into place: never a half-written report
    partial.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    partial.replace(path)


def check_inputs(config: EvaluateConfig) -> None:
    """Options, ground truth and report path, before the run is loaded (one line each)."""
    from single_image_nerf import runs
    from single_image_nerf.inputs import check_numbers
    from single_image_nerf.known_objects import KNOWN_OBJECTS, known_object_names
    from single_image_nerf.mesh_objects import is_mesh_spec

    check_numbers(config)
    if config.known_object is not None and config.known_object not in KNOWN_OBJECTS:
        if not is_mesh_spec(config.known_object):
            raise UserInputError(f"--known-object {config.known_object!r} is not a known object: choose one of "
                                 f"{', '.join(known_object_names())} or give a mesh file's path")
        get_known_object(config.known_object)  # a bad mesh file ends here, in one line
    if config.posed_images is not None:
        checked_posed_images(Path(config.posed_images))
    if config.mesh is not None:
        from single_image_nerf.mesh.files import MESH_SUFFIXES

        mesh = Path(config.mesh)
        if not mesh.is_file() or mesh.suffix.lower() not in MESH_SUFFIXES:
            raise UserInputError(f"--mesh {mesh} is not a {', '.join(MESH_SUFFIXES)} file: pass a mesh written by "
                                 "sin-export-mesh")
    if config.output_json is not None:
        output = Path(config.output_json)
        if output.is_dir():
            raise UserInputError(f"--output-json {output} is a folder, not a file")
        runs.check_writable_folder(output.parent)


def mesh_pipeline(pipeline, path: Path):
    """The run's pipeline with the mesh at `path` (read in world axes) drawn in its model's place."""
    from types import SimpleNamespace

    from single_image_nerf.mesh.files import read_mesh
    from single_image_nerf.mesh.render import MeshRenderer

    return SimpleNamespace(datamanager=pipeline.datamanager, model=MeshRenderer(read_mesh(path)))


def run(config: EvaluateConfig) -> Dict[str, Any]:
    """Load the run through nerfstudio's eval_setup, evaluate it, print the tables and write the JSON."""
    from single_image_nerf import runs

    checks = [("--num-views", config.num_views, 0), ("--geometry-views", config.geometry_views, 0),
              ("--geometry-resolution", config.geometry_resolution, 8), ("--num-points", config.num_points, 1),
              ("--supersample", config.supersample, 1)]
    if config.resolution is not None:
        checks.append(("--resolution", config.resolution, 8))
    for name, value, low in checks:
        if value < low:
            raise UserInputError(f"{name} must be at least {low}, got {value}")
    if not config.f_score_threshold > 0:
        raise UserInputError(f"--f-score-threshold must be positive, got {config.f_score_threshold}")
    if config.posed_images is not None and not Path(config.posed_images).is_dir():
        raise UserInputError(f"--posed-images {config.posed_images} is not a folder")
    check_inputs(config)
    run_config = runs.read_run_config(config.load_config)
    runs.check_checkpoint(run_config, config.load_config)
    _, pipeline, checkpoint, step = runs.checked_eval_setup(config.load_config)
    if config.mesh is not None:
        pipeline = mesh_pipeline(pipeline, config.mesh)
    try:
        report = evaluate_pipeline(pipeline, config)
    except NoGroundTruth as error:
        raise UserInputError(str(error)) from None
    report["checkpoint"], report["step"] = str(checkpoint), int(step)
    if config.mesh is not None:
        report["mesh"] = str(config.mesh)
    print_report(report)
    if config.output_json is not None:
        write_report(report, config.output_json)
    return report


def entrypoint() -> None:
    """Console entry point (`sin-evaluate`)."""
    import tyro

    run_command("sin-evaluate", lambda: run(tyro.cli(EvaluateConfig, prog="sin-evaluate")))


if __name__ == "__main__":
    entrypoint()
