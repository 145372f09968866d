"""`preprocess_image`: a photo (or several photos of one object) in, the folder the coarse stage reads out.

Folder contents (the contract with `SingleImageDataParser`):
  rgba.png           size×size RGBA uint8, the object centred with a border; alpha is the cleaned mask
  depth.npy          size×size float32, DPT's relative inverse depth on the foreground (alpha >= 128), 0 elsewhere
  depth_preview.png  a picture of depth.npy
  caption.txt        one line (absent with caption=False and no caption_text)
  meta.json          input, options, crop box, models, package versions, timings; "depth_convention"
Several photos (with `azimuths`): the main view's files as above, each extra view's rgba.png, depth.npy,
depth_preview.png and meta.json in views/INDEX/, every view listed in the top meta.json's "views" (see `views`), all
cut alike by `recentre.common_square_crops` so that they share one scale and one rotation axis.
The folder is written beside its destination and moved into place at the end: a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from single_image_nerf.preprocess.caption import DEFAULT_CAPTION_MODEL
from single_image_nerf.preprocess.depth import DEFAULT_DEPTH_MODEL, DEPTH_CONVENTION
from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.pretrained import DEFAULT_SAM_MODEL
from single_image_nerf.preprocess.image_io import DEFAULT_MAX_SIDE, LoadedImage, load_image
from single_image_nerf.preprocess.masking import (ALPHA_THRESHOLD, GRABCUT_MARGIN, Box, clean_alpha, clean_mask,
                                                  cut_edge, grabcut_mask)
from single_image_nerf.preprocess.recentre import SquareCrop, apply_crop, common_square_crops, mask_bbox, square_crop
from single_image_nerf.preprocess.views import (VIEWS_KEY, check_alpha_kinds, check_mask_heights, mask_heights,
                                                relative_azimuths, view_elevations, view_folder)

MASK_SOURCES = ("auto", "alpha", "sam", "grabcut")
"""auto: the image's alpha when it has transparency, SAM otherwise."""
OUTPUT_FILES = ("rgba.png", "depth.npy", "depth_preview.png", "caption.txt", "meta.json")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything `preprocess_image` can be told; defaults match the command line's."""

    size: int = 512
    """Side of the output square in pixels."""
    border: float = 0.15
    """Fraction of the side left empty on each side of the object's longer side."""
    mask_from: str = "auto"
    """Foreground source: auto, alpha, sam or grabcut (no weights; a fallback when SAM's are unavailable)."""
    sam_model: str = DEFAULT_SAM_MODEL
    """SAM model type: vit_b, vit_l or vit_h."""
    sam_checkpoint: Optional[str] = None
    """SAM checkpoint file; default the official file name in the usual caches."""
    box: Optional[Box] = None
    """Prompt box (x0, y0, x1, y1) in pixels of the upright full-resolution photo."""
    points: Optional[Tuple[Tuple[float, float], ...]] = None
    """Prompt points (x, y) in pixels of the upright full-resolution photo."""
    point_labels: Optional[Tuple[int, ...]] = None
    """1 (object) or 0 (background) for each point; default all 1."""
    max_hole_fraction: Optional[float] = None
    """Fill only holes smaller than this fraction of the mask's area (None fills every hole)."""
    depth: bool = True
    """Estimate depth with DPT."""
    depth_model: str = DEFAULT_DEPTH_MODEL
    """Hub id or local folder of the DPT model."""
    caption: bool = True
    """Caption the object with the captioning model (ignored when caption_text is given)."""
    caption_text: Optional[str] = None
    """Caption to write instead of running the captioning model."""
    caption_model: str = DEFAULT_CAPTION_MODEL
    """Hub id or local folder of the captioning model: BLIP (the default) or BLIP-2."""
    device: Optional[str] = None
    """Torch device for the models; default the current CUDA device if there is one, else the CPU."""
    elevation: float = 0.0
    """Elevation of the photo's camera in degrees above the object's horizontal plane, written to meta.json as
    `elevation_deg` for the reference camera (and the Zero123 priors' polar angle, 90 - elevation)."""
    azimuths: Optional[Tuple[float, ...]] = None
    """Azimuth of each photo's camera in degrees (several photos), relative to the first photo's; None for one photo."""
    elevations: Optional[Tuple[float, ...]] = None
    """Elevation of each photo's camera in degrees (several photos); None: `elevation` for every photo."""
    allow_cut: bool = False
    """Keep an object that the photo's edge cuts off (a bust, a close-up cut on purpose); without it such a photo
    is refused, naming the photo and the edge."""
    max_side: int = DEFAULT_MAX_SIDE
    """Photos larger than this on their longest side are downscaled on load."""
    overwrite: bool = False
    """Replace an existing output folder (only one that this function wrote, or an empty one)."""
    progress: bool = True
    """Show a progress bar over the steps on stderr."""


@dataclass(frozen=True)
class PreprocessResult:
    """Where the folder was written and what its meta.json says."""

    output_dir: Path
    meta: Dict[str, Any]


def preprocess_image(
    image_path: Union[str, Path, Sequence[Union[str, Path]]],
    output_dir: Union[str, Path],
    options: Optional[PreprocessOptions] = None,
    **overrides: Any,
) -> PreprocessResult:
    """Turns a photo, or several photos of one object (with `azimuths`), into the folder the coarse stage reads;
    options as a `PreprocessOptions` and/or keywords."""
    opts = replace(options or PreprocessOptions(), **overrides)
    _check_options(opts)
    photos = [image_path] if isinstance(image_path, (str, Path)) else list(image_path)
    names = [str(photo) for photo in photos]
    azimuths = relative_azimuths(names, opts.azimuths)
    elevations = view_elevations(len(photos), opts.elevation, opts.elevations)
    if len(photos) == 1:  # one photo: exactly the folder it always was
        opts = replace(opts, elevation=elevations[0], azimuths=None, elevations=None)
    if len(photos) > 1 and (opts.box is not None or opts.points):
        raise PreprocessError("--box and --points name pixels of one photo: with several photos leave them out "
                              "(SAM's own prompt, or --mask-from grabcut), or give cut-outs with alpha")
    output_dir = Path(output_dir)
    _check_output(output_dir, opts.overwrite)
    timings: Dict[str, float] = {}
    models: Dict[str, Any] = {}  # each model is loaded once for all the photos
    with _Steps(_step_names(opts), opts.progress, timings) as steps:
        with steps.step("load photo"):
            images = [load_image(photo, max_side=opts.max_side) for photo in photos]
        if len(images) > 1 and opts.mask_from in ("auto", "alpha"):
            check_alpha_kinds(names, [image.alpha is not None for image in images])
        source = _mask_source(opts, images[0])
        runs_model = source == "sam" or opts.depth or _runs_caption(opts)
        device = _device(opts) if runs_model else None
        with steps.step(f"mask ({source})"):
            masks = [_foreground(image, opts, device, models) for image in images]
        models.clear()
        if not opts.allow_cut:
            for image, (alpha, info) in zip(images, masks):
                _check_whole(image, alpha, info["source"], opts)
        crops = _crops(images, [alpha for alpha, _ in masks], names, opts)
        rgbas = [apply_crop(image.rgb, alpha, crop) for image, (alpha, _), crop in zip(images, masks, crops)]
        depths: List[Tuple[Optional[np.ndarray], Optional[Dict[str, Any]]]] = [(None, None)] * len(images)
        if opts.depth:
            with steps.step("depth (DPT)"):
                depths = [_depth(image, crop, rgba[..., 3], opts, device, models)
                          for image, crop, rgba in zip(images, crops, rgbas)]
            models.clear()
        caption, caption_info = opts.caption_text, {"caption_source": "user" if opts.caption_text else "none"}
        if _runs_caption(opts):
            with steps.step("caption"):
                caption, caption_info = _caption(rgbas[0], opts, device)
        metas = [
            _meta(image, opts, crop, mask_info, depth_info, elevation, caption if index == 0 else None,
                  caption_info if index == 0 else {"caption_source": "none"}, device, timings)
            for index, (image, crop, (_, mask_info), (_, depth_info), elevation)
            in enumerate(zip(images, crops, masks, depths, elevations))
        ]
        if len(images) > 1:
            for meta, azimuth in zip(metas, azimuths):
                meta["azimuth_deg"] = azimuth
            metas[0][VIEWS_KEY] = [
                {"folder": view_folder(index), "azimuth_deg": azimuth, "elevation_deg": elevation, "photo": str(photo)}
                for index, (azimuth, elevation, photo) in enumerate(zip(azimuths, elevations, photos))
            ]
        with steps.step("write"):
            _write(output_dir, [(view_folder(index), rgba, depth, meta)
                                for index, (rgba, (depth, _), meta) in enumerate(zip(rgbas, depths, metas))],
                   caption, opts.overwrite)
    return PreprocessResult(output_dir=output_dir, meta=metas[0])


def _crops(images: List[LoadedImage], alphas: List[np.ndarray], names: List[str], opts: PreprocessOptions
           ) -> List[SquareCrop]:
    """The square of each photo: one photo is cut around its mask; several photos are cut alike (one scale, the
    rotation axis at each photo's centre), after checking that their masks' heights agree."""
    bboxes = [mask_bbox(alpha > 0) for alpha in alphas]
    if len(images) == 1:
        return [square_crop(bboxes[0], opts.border, opts.size)]
    shapes = [image.rgb.shape[:2] for image in images]
    check_mask_heights(names, mask_heights(bboxes, shapes))
    return common_square_crops(bboxes, shapes, opts.border, opts.size)


def _check_options(opts: PreprocessOptions) -> None:
    """Rejects option values that cannot work, before any model is loaded."""
    if opts.mask_from not in MASK_SOURCES:
        raise PreprocessError(f"mask source '{opts.mask_from}' is unknown; choose one of {', '.join(MASK_SOURCES)}")
    if not 16 <= opts.size <= 4096:
        raise PreprocessError(f"size {opts.size} is outside 16..4096 px; 512 is the usual choice")
    if not -89.0 <= opts.elevation <= 89.0:
        raise PreprocessError(f"elevation {opts.elevation} is outside [-89, 89] degrees; 0 is a photo taken level")
    if not 0.0 <= opts.border < 0.5:
        raise PreprocessError(f"border {opts.border} is outside [0, 0.5); 0.15 is the usual choice")
    if opts.box is not None:
        if len(opts.box) != 4 or not (opts.box[0] < opts.box[2] and opts.box[1] < opts.box[3]):
            raise PreprocessError(f"box {opts.box} must be x0 y0 x1 y1 with x0 < x1 and y0 < y1 (pixels)")
    if opts.max_hole_fraction is not None and not 0.0 <= opts.max_hole_fraction <= 1.0:
        raise PreprocessError(f"max hole fraction {opts.max_hole_fraction} is outside [0, 1]; leave it out to fill "
                              f"every hole")
    if opts.box is not None and not all(math.isfinite(v) for v in opts.box):
        raise PreprocessError(f"box {opts.box} holds a value that is not a finite number of pixels")
    if opts.points is not None and not all(math.isfinite(v) for point in opts.points for v in point):
        raise PreprocessError(f"points {opts.points} hold a value that is not a finite number of pixels")
    if opts.caption_text is not None and not opts.caption_text.strip():
        raise PreprocessError("the caption given is empty; give some words or leave --caption out")


def _check_output(output_dir: Path, overwrite: bool) -> None:
    """Refuses an existing folder unless overwrite, and never replaces a folder this function did not write."""
    if output_dir.exists() and not output_dir.is_dir():
        raise PreprocessError(f"{output_dir} exists and is not a folder; choose another --output")
    ancestor = output_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PreprocessError(f"cannot create {output_dir}: {ancestor} is a file, not a folder; choose another --output")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PreprocessError(f"cannot create {output_dir}: {ancestor} is not writable; choose another --output")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise PreprocessError(f"{output_dir} already exists; pass --overwrite to replace it, or choose another --output")
    if not (output_dir / "meta.json").is_file():
        raise PreprocessError(
            f"{output_dir} exists and holds no meta.json, so it was not written by preprocessing; "
            f"it is left untouched: choose another --output"
        )


def _step_names(opts: PreprocessOptions) -> Tuple[str, ...]:
    return ("load photo", "mask") + (("depth",) if opts.depth else ()) + (("caption",) if _runs_caption(opts) else ()) + ("write",)


def _runs_caption(opts: PreprocessOptions) -> bool:
    return opts.caption and opts.caption_text is None


def _device(opts: PreprocessOptions) -> Any:
    from single_image_nerf.preprocess.devices import resolve_device

    return resolve_device(opts.device)


def _mask_source(opts: PreprocessOptions, image: LoadedImage) -> str:
    """The mask source that `auto` resolves to for this image."""
    if opts.mask_from == "auto":
        return "alpha" if image.alpha is not None else "sam"
    return opts.mask_from


def _foreground(
    image: LoadedImage, opts: PreprocessOptions, device: Any, models: Dict[str, Any]
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """H×W uint8 alpha of the cleaned foreground at the working resolution, and what made it."""
    source = _mask_source(opts, image)
    box = tuple(v * image.scale for v in opts.box) if opts.box is not None else None
    points = [(x * image.scale, y * image.scale) for x, y in opts.points] if opts.points else None
    info: Dict[str, Any] = {"source": source}
    if source == "alpha":
        if image.alpha is None:
            raise PreprocessError(
                f"{image.path} has no transparency to use as a mask; use --mask-from sam (or grabcut)"
            )
        soft = image.alpha
        raw = soft >= ALPHA_THRESHOLD
    elif source == "sam":
        from single_image_nerf.preprocess.sam import find_sam_checkpoint, load_sam, sam_mask

        checkpoint = find_sam_checkpoint(opts.sam_model, opts.sam_checkpoint)
        if "sam" not in models:
            models["sam"] = load_sam(opts.sam_model, checkpoint, device)
        raw, sam_info = sam_mask(image.rgb, models["sam"], box, points, opts.point_labels)
        soft = None
        info.update(model=opts.sam_model, checkpoint=str(checkpoint), **sam_info)
    else:
        raw = grabcut_mask(image.rgb, box)
        soft = None
        info.update(prompt={"box": list(box) if box is not None else "default (2% margin)"})
    cleaned = clean_mask(raw, opts.max_hole_fraction)
    if not cleaned.any():
        hint = "the alpha channel is fully transparent" if source == "alpha" else f"{source} found no object"
        raise PreprocessError(
            f"{image.path}: the foreground mask is empty ({hint}); give a --box x0 y0 x1 y1 or --points around the "
            f"object, or another --mask-from"
        )
    alpha = clean_alpha(soft, cleaned) if soft is not None else cleaned.astype(np.uint8) * 255
    info.update(area_fraction=float(cleaned.mean()), bbox_working=list(mask_bbox(cleaned)))
    return alpha, info


def _check_whole(image: LoadedImage, alpha: np.ndarray, source: str, opts: PreprocessOptions) -> None:
    """Refuses a photo whose object the frame cuts off: more than a small share of the mask's outline along one
    edge of the photo (within GrabCut's margin when GrabCut ran on its default box, which it takes as background).
    A cut-out whose alpha reaches all four edges is taken as trimmed to the object, not cut."""
    mask = alpha >= ALPHA_THRESHOLD
    height, width = mask.shape
    if source == "alpha" and mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any():
        return
    band = (1, 1)
    if source == "grabcut" and opts.box is None:
        band = (math.ceil(GRABCUT_MARGIN * height) + 2, math.ceil(GRABCUT_MARGIN * width) + 2)
    cut = cut_edge(mask, band)
    if cut is not None:
        edge, share = cut
        raise PreprocessError(
            f"{image.path}: the object touches the photo's {edge} edge along {share:.0%} of its outline, so the frame "
            f"cuts it off; retake the photo with the whole object and some background around it, or pass "
            f"--allow-cut if it is cut on purpose")


def _depth(
    image: LoadedImage, crop: SquareCrop, alpha: np.ndarray, opts: PreprocessOptions, device: Any,
    models: Dict[str, Any],
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Foreground depth on the output square (0 outside alpha >= 128) and its description for meta.json."""
    from single_image_nerf.preprocess.depth import estimate_depth, load_depth_model

    if "depth" not in models:
        models["depth"] = load_depth_model(opts.depth_model, device)
    full = estimate_depth(image.rgb, *models["depth"])
    mask = alpha >= ALPHA_THRESHOLD
    depth = np.where(mask, crop.apply(full, upscale="linear"), 0.0).astype(np.float32)
    values = depth[mask]
    info = {
        "depth_model": opts.depth_model,
        "depth_convention": DEPTH_CONVENTION,
        "depth_range": [float(values.min()), float(values.max())] if values.size else None,
        "depth_mask": f"alpha >= {ALPHA_THRESHOLD}",
    }
    return depth, info


def _caption(rgba: np.ndarray, opts: PreprocessOptions, device: Any) -> Tuple[str, Dict[str, Any]]:
    """The captioning model's caption of the recentred object composited over white."""
    from single_image_nerf.preprocess.caption import caption_image, load_caption_model

    model, processor, family = load_caption_model(opts.caption_model, device)
    opacity = rgba[..., 3:4].astype(np.float32) / 255.0
    on_white = (rgba[..., :3].astype(np.float32) * opacity + 255.0 * (1.0 - opacity)).round().astype(np.uint8)
    caption = caption_image(on_white, model, processor)
    return caption, {"caption_source": family.replace("-", ""), "caption_model": opts.caption_model}


def _meta(
    image: LoadedImage,
    opts: PreprocessOptions,
    crop: SquareCrop,
    mask_info: Dict[str, Any],
    depth_info: Optional[Dict[str, Any]],
    elevation: float,
    caption: Optional[str],
    caption_info: Dict[str, Any],
    device: Any,
    timings: Dict[str, float],
) -> Dict[str, Any]:
    """The contents of meta.json."""
    files = ["rgba.png"] + (["depth.npy", "depth_preview.png"] if depth_info else []) + (["caption.txt"] if caption else [])
    meta: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "path": str(image.path.resolve()),
            "format": image.source_format,
            "mode": image.source_mode,
            "original_size": list(image.original_size),
            "working_size": [int(image.rgb.shape[1]), int(image.rgb.shape[0])],
            "notes": list(image.notes),
        },
        "size": opts.size,
        "border": opts.border,
        "elevation_deg": elevation,
        "crop_box": [round(v, 3) for v in crop.box_in_original(image.scale)],
        "crop_box_note": "x0 y0 x1 y1 in pixels of the upright full-resolution photo; may reach past its edges",
        "mask": mask_info,
        "depth_convention": depth_info["depth_convention"] if depth_info else None,
        "depth": depth_info,
        "caption": caption,
        **caption_info,
        "models": {
            "sam": opts.sam_model if mask_info["source"] == "sam" else None,
            "depth": opts.depth_model if opts.depth else None,
            "caption": caption_info.get("caption_model"),
        },
        "device": str(device) if device is not None else None,
        "versions": _versions(),
        "files": files,
        "timings_s": timings,
        "options": {k: v for k, v in asdict(opts).items()
                    if k != "progress" and not (k in ("azimuths", "elevations") and v is None)},
    }
    return meta


def _versions() -> Dict[str, Optional[str]]:
    """Versions of the packages that shaped the output."""
    from importlib import metadata

    import cv2

    from single_image_nerf import __version__

    versions: Dict[str, Optional[str]] = {"single-image-nerf": __version__, "opencv": cv2.__version__}
    for name in ("numpy", "pillow", "scipy", "torch", "transformers", "segment-anything"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _write(
    output_dir: Path,
    views: List[Tuple[str, np.ndarray, Optional[np.ndarray], Dict[str, Any]]],
    caption: Optional[str],
    overwrite: bool,
) -> None:
    """Writes the folder beside its destination, then moves it into place (replacing the old one if allowed).
    `views` are (folder relative to the output, rgba, depth, meta), the main view first with folder '.'."""
    from single_image_nerf.preprocess.depth import depth_preview

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        for folder, rgba, depth, meta in reversed(views):  # the main view's meta.json last
            target = staging / folder
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, mode="RGBA").save(target / "rgba.png")
            if depth is not None:
                np.save(target / "depth.npy", depth)
                Image.fromarray(depth_preview(depth, rgba[..., 3] >= ALPHA_THRESHOLD)).save(target / "depth_preview.png")
            if caption and folder == ".":
                (target / "caption.txt").write_text(caption.strip().replace("\n", " ") + "\n", encoding="utf-8")
            (target / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n",
                                              encoding="utf-8")
        _check_output(output_dir, overwrite)
        if output_dir.exists():  # the old folder is set aside, not deleted, until the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old.", dir=output_dir.parent))
            os.replace(output_dir, old / output_dir.name)
            os.replace(staging, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _json_default(value: Any) -> Any:
    """JSON for tuples of numpy scalars and paths found in options."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _Steps:
    """A progress bar over named steps that also records each step's seconds."""

    def __init__(self, names: Tuple[str, ...], enabled: bool, timings: Dict[str, float]) -> None:
        self.names, self.enabled, self.timings, self.bar = names, enabled, timings, None

    def __enter__(self) -> "_Steps":
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.names), desc="preprocess", unit="step", leave=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def step(self, name: str) -> "_Step":
        return _Step(self, name)


class _Step:
    """One timed step: shows its name while it runs and advances the bar when it ends."""

    def __init__(self, steps: _Steps, name: str) -> None:
        self.steps, self.name, self.start = steps, name, 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        if self.steps.bar is not None:
            self.steps.bar.set_description(self.name)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.steps.timings[self.name] = round(time.perf_counter() - self.start, 3)
        if self.steps.bar is not None and exc_type is None:
            self.steps.bar.update(1)

