"""Reading the reference view: an RGBA image (alpha is the mask) or a preprocessed folder, recentred and resized.

Everything here is a pure function of files and arrays; the dataparser turns the result into cameras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from single_image_nerf.errors import UserInputError

MAX_INPUT_PIXELS = 200_000_000
"""Images larger than this (in pixels) are refused instead of exhausting memory."""
MAX_WORKING_SIDE = 4096
"""Larger inputs are downscaled to this side before any processing."""
FOLDER_IMAGE = "rgba.png"
PREPROCESS_HINT = "preprocess the photo first: python data_scripts/preprocess_image.py PHOTO --output data/NAME"


@dataclass
class ReferenceView:
    """The reference view after recentring: RGBA in [0, 1], optional depth (larger = farther), optional caption."""

    rgba: np.ndarray
    """(S, S, 4) float32 in [0, 1]; alpha is the foreground mask."""
    depth: Optional[np.ndarray]
    """(S, S) float32 relative depth (larger = farther) on the foreground, NaN where unknown; None if absent."""
    caption: Optional[str]
    """Caption found beside the image, if any."""
    data_dir: Optional[Path]
    """The preprocessed folder, if the input was one."""


def load_rgba(path: Path, fix: Optional[str] = None) -> np.ndarray:
    """Read an image file as (H, W, 4) float32 in [0, 1], honouring EXIF orientation and 16-bit data.
    An image without an alpha channel is refused with a one-line error saying how to get a mask: `fix` when given
    (a view of a several-photo folder), else how to preprocess one photo."""
    if not path.exists():
        raise UserInputError(f"{path} does not exist: give an RGBA image or a preprocessed folder")
    if path.is_dir():
        raise UserInputError(f"{path} is a folder without {FOLDER_IMAGE}: {fix or PREPROCESS_HINT}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_INPUT_PIXELS:
                raise UserInputError(
                    f"{path} is {width}x{height} pixels, too large: downscale it below {MAX_INPUT_PIXELS} pixels"
                )
            image.draft("RGBA", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))
            image = ImageOps.exif_transpose(image)
            array = _to_rgba_array(image, path, fix)
    except UserInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UserInputError(f"{path} is not a readable image ({error}): {fix or 'give a PNG with an alpha channel'}"
                             ) from None
    if max(array.shape[:2]) > MAX_WORKING_SIDE:
        array = resize_array(array, _fit_within(array.shape[:2], MAX_WORKING_SIDE))
    return array


def _to_rgba_array(image: Image.Image, path: Path, fix: Optional[str] = None) -> np.ndarray:
    """PIL image of any mode with transparency -> (H, W, 4) float32 in [0, 1]."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if not has_alpha:
        raise UserInputError(f"{path} has no alpha channel, so the object's mask is unknown: "
                             f"{fix or 'give an RGBA cut-out or ' + PREPROCESS_HINT}")
    return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def _fit_within(shape: Tuple[int, int], side: int) -> Tuple[int, int]:
    height, width = shape
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_array(array: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Resize an (H, W[, C]) float array to `shape` (height, width) with antialiased bilinear filtering."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    squeeze = tensor.ndim == 2
    tensor = tensor[None, None] if squeeze else tensor.permute(2, 0, 1)[None]
    antialias = shape[0] < tensor.shape[-2] or shape[1] < tensor.shape[-1]
    out = torch.nn.functional.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=antialias)
    out = out[0, 0] if squeeze else out[0].permute(1, 2, 0)
    return out.numpy()


def object_box(alpha: np.ndarray, threshold: float = 0.5) -> Tuple[int, int, int, int]:
    """Bounding box (row0, col0, row1, col1), end-exclusive, of the pixels whose alpha exceeds `threshold`."""
    rows = np.flatnonzero((alpha > threshold).any(axis=1))
    cols = np.flatnonzero((alpha > threshold).any(axis=0))
    if rows.size == 0:
        raise UserInputError("the image's mask is empty (alpha is zero everywhere): give an image whose alpha "
                             "marks the object, or preprocess the photo with SAM")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_square(array: np.ndarray, centre: Tuple[float, float], side: float, size: int) -> np.ndarray:
    """Sample the square of `side` pixels centred at `centre` (row, col) into a `size`x`size` array.
    Outside the image is zero (transparent). Bilinear, with antialiasing when shrinking."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    squeeze = tensor.ndim == 2
    tensor = tensor[None, None] if squeeze else tensor.permute(2, 0, 1)[None]
    height, width = tensor.shape[-2:]
    # Pre-shrink so that one output pixel covers about one input pixel, then sample with grid_sample.
    shrink = side / size
    if shrink > 1.0:
        new_hw = (max(1, round(height / shrink)), max(1, round(width / shrink)))
        tensor = torch.nn.functional.interpolate(tensor, size=new_hw, mode="bilinear", antialias=True,
                                                 align_corners=False)
        scale_r, scale_c = new_hw[0] / height, new_hw[1] / width
        centre = (centre[0] * scale_r, centre[1] * scale_c)
        side_r, side_c = side * scale_r, side * scale_c
        height, width = new_hw
    else:
        side_r = side_c = side
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    rows = centre[0] + steps * side_r
    cols = centre[1] + steps * side_c
    grid_y = (rows / height) * 2 - 1
    grid_x = (cols / width) * 2 - 1
    grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1)[None]
    out = torch.nn.functional.grid_sample(tensor, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out[0, 0] if squeeze else out[0].permute(1, 2, 0)
    return out.numpy()


def load_depth(folder: Path, shape: Tuple[int, int]) -> Optional[np.ndarray]:
    """depth.npy of a preprocessed folder as larger-is-farther depth (NaN off the foreground), or None."""
    path = folder / "depth.npy"
    if not path.exists():
        return None
    try:
        depth = np.load(path).astype(np.float32)
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path} is not a readable .npy array ({error}): rerun the preprocessing") from None
    if depth.shape != tuple(shape):
        raise UserInputError(f"{path} has shape {depth.shape} but {folder / FOLDER_IMAGE} is {shape}: rerun the "
                             "preprocessing so that both come from the same image")
    convention = "disparity"
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            convention = json.loads(meta_path.read_text()).get("depth_convention", convention)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{meta_path} is not valid JSON ({error}): rerun the preprocessing") from None
    if convention not in ("disparity", "depth"):
        raise UserInputError(f"{meta_path}: depth_convention must be 'disparity' or 'depth', not {convention!r}")
    depth = np.where(np.isfinite(depth), depth, np.nan)
    return -depth if convention == "disparity" else depth


def photo_side(path: Path) -> Optional[int]:
    """Side, in pixels, of the reference image as it was preprocessed: the longer side of a folder's rgba.png or of
    the given image (at most MAX_WORKING_SIDE), read from the file's header. None when there is no readable image
    (the dataparser then says why)."""
    path = Path(path)
    image_path = path / FOLDER_IMAGE if path.is_dir() else path
    try:
        with Image.open(image_path) as image:
            return min(max(image.size), MAX_WORKING_SIDE)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def read_reference(path: Path, size: int, border: float, recenter: bool) -> ReferenceView:
    """Load an RGBA image or a preprocessed folder, and (optionally) recentre the object in a square of `size`
    pixels with `border` (a fraction of the side) left empty on each side."""
    path = Path(path)
    data_dir = None
    caption = None
    depth = None
    if path.is_dir() and (path / FOLDER_IMAGE).exists():
        data_dir = path
        rgba = load_rgba(path / FOLDER_IMAGE)
        depth = load_depth(path, rgba.shape[:2])
        if (path / "caption.txt").exists():
            caption = (path / "caption.txt").read_text(encoding="utf-8").strip() or None
    else:
        rgba = load_rgba(path)
    box = object_box(rgba[..., 3])
    if recenter:
        from single_image_nerf.preprocess.recentre import square_crop  # the preprocessing's own square window

        row0, col0, row1, col1 = box
        window = square_crop((col0, row0, col1, row1), border, size)
        centre_row, centre_col, side = window.y0 + window.side / 2.0, window.x0 + window.side / 2.0, float(window.side)
    else:
        height, width = rgba.shape[:2]
        centre_row, centre_col, side = height / 2.0, width / 2.0, float(max(height, width))
    out, depth = resample_view(rgba, depth, (centre_row, centre_col), side, size)
    return ReferenceView(rgba=out, depth=depth, caption=caption, data_dir=data_dir)


def resample_view(
    rgba: np.ndarray, depth: Optional[np.ndarray], centre: Tuple[float, float], side: float, size: int
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The square of `side` pixels centred at `centre` (row, col) of an RGBA image and its depth, at `size` pixels."""
    centre_row, centre_col = centre
    # Resample premultiplied colour so that transparent pixels do not darken the object's edges.
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    out = np.clip(crop_square(premultiplied, (centre_row, centre_col), side, size), 0.0, 1.0)
    alpha = out[..., 3:]
    out[..., :3] = np.where(alpha > 1e-4, np.clip(out[..., :3] / np.maximum(alpha, 1e-4), 0.0, 1.0), 0.0)
    if depth is not None:
        valid = np.isfinite(depth) & (rgba[..., 3] > 0.5)
        weight = crop_square(valid.astype(np.float32), (centre_row, centre_col), side, size)
        summed = crop_square(np.where(valid, depth, 0.0), (centre_row, centre_col), side, size)
        depth = np.where(weight > 0.5, summed / np.maximum(weight, 1e-6), np.nan).astype(np.float32)
    return out.astype(np.float32), depth
