"""Robust loading of a user's photo into 8-bit RGB (+ optional alpha), upright and at a safe working size.

Handles EXIF orientation, CMYK and ICC profiles, 16-bit and float images, palette/LA/grayscale modes, animated
images (first frame), truncated files, tiny images and huge images (JPEGs are decoded directly at a reduced scale;
Pillow's decompression-bomb limit is respected and reported). Every failure is a `PreprocessError` on one line.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from single_image_nerf.preprocess.errors import PreprocessError

DEFAULT_MAX_SIDE = 4096
"""Longest side of the working image; larger photos are downscaled on load (the output is 512 px anyway)."""
MIN_SIDE = 16
"""Shortest side accepted: below this no object can be segmented or recentred."""

_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_RESIZABLE_MODES = ("RGB", "RGBA", "L", "LA", "CMYK")


@dataclass(frozen=True)
class LoadedImage:
    """A photo ready for preprocessing: upright 8-bit RGB, alpha if it has real transparency, and its provenance."""

    rgb: np.ndarray
    """H×W×3 uint8, upright (EXIF orientation applied), at most `max_side` on its longest side."""
    alpha: Optional[np.ndarray]
    """H×W uint8 alpha, or None when the image has no alpha or its alpha is fully opaque."""
    path: Path
    """The file it came from."""
    original_size: Tuple[int, int]
    """(width, height) of the upright photo at full resolution, before any downscaling."""
    scale: float
    """Working pixels per original pixel (1.0 when not downscaled); original = working / scale."""
    source_mode: str
    """Pillow mode of the file (for example RGB, CMYK, P, I;16)."""
    source_format: str
    """Pillow format name of the file (for example JPEG, PNG)."""
    notes: Tuple[str, ...]
    """What was done to it on the way (orientation, colour conversion, first frame, downscaling)."""


def load_image(
    path: Union[str, Path], max_side: int = DEFAULT_MAX_SIDE, min_side: int = MIN_SIDE
) -> LoadedImage:
    """Reads `path` into a `LoadedImage`; raises `PreprocessError` with a one-line reason and fix otherwise."""
    path = Path(path)
    if not path.exists():
        raise PreprocessError(f"{path}: no such file; check the path to the photo")
    if not path.is_file():
        raise PreprocessError(f"{path}: is not a file; give the path of a photo (JPEG, PNG, WebP, ...)")
    notes: List[str] = []
    with _open(path) as img:
        source_mode, source_format = img.mode, img.format or "unknown"
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > 1:
            img.seek(0)
            notes.append(f"first frame of {n_frames} used")
        orientation = _orientation(img)
        width, height = img.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if min(width, height) < min_side:
            raise PreprocessError(
                f"{path}: the image is {width}×{height} px, too small to hold an object; "
                f"give a photo at least {min_side} px on each side"
            )
        if max(width, height) > max_side and source_format == "JPEG":
            img.draft(None, _fit(img.size, max_side))  # decode at 1/2, 1/4 or 1/8 scale: no full-size buffer
        _decode(img, path)
        if max(img.size) > max_side and img.mode in _RESIZABLE_MODES:
            img = _downscale(img, max_side)
        img = _to_rgb_or_rgba(img, path, notes)
        if max(img.size) > max_side:
            img = _downscale(img, max_side)
        if orientation in _TRANSPOSE_FOR_ORIENTATION:
            img = img.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
            notes.append(f"EXIF orientation {orientation} applied")
        array = np.asarray(img)
    scale = array.shape[1] / width
    if scale < 1.0:
        notes.append(f"downscaled from {width}×{height} to {array.shape[1]}×{array.shape[0]}")
    alpha = None
    if array.shape[2] == 4:
        alpha = np.ascontiguousarray(array[..., 3])
        if alpha.min() == 255:
            alpha = None
            notes.append("alpha channel is fully opaque; ignored")
    rgb = np.ascontiguousarray(array[..., :3])
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        path=path,
        original_size=(width, height),
        scale=scale,
        source_mode=source_mode,
        source_format=source_format,
        notes=tuple(notes),
    )


def _open(path: Path) -> Image.Image:
    """Image.open with Pillow's errors turned into one-line PreprocessErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:
        raise PreprocessError(
            f"{path}: too many pixels to decode safely ({error}); downscale it first, "
            f"e.g. to 4096 px on its longest side"
        ) from None
    except UnidentifiedImageError:
        raise PreprocessError(
            f"{path}: not an image Pillow can read; give a JPEG, PNG, WebP, TIFF, BMP or GIF file"
        ) from None
    except PermissionError:
        raise PreprocessError(f"{path}: permission denied; make the file readable") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise PreprocessError(
            f"{path}: cannot be read ({error}); the file may be truncated or corrupt: re-export or re-download it"
        ) from None


def _decode(img: Image.Image, path: Path) -> None:
    """Decodes the pixel data, reporting truncated or corrupt files in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as error:
        raise PreprocessError(f"{path}: too many pixels to decode safely ({error}); downscale it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise PreprocessError(
            f"{path}: the file is truncated or corrupt ({error}); re-export or re-download the photo"
        ) from None


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8), 1 when absent or unreadable."""
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block must not stop the photo from loading
        return 1
    return value if 1 <= value <= 8 else 1


def _fit(size: Tuple[int, int], max_side: int) -> Tuple[int, int]:
    """The size that fits `size` inside a max_side square, keeping the aspect ratio."""
    factor = max_side / max(size)
    return max(1, math.ceil(size[0] * factor)), max(1, math.ceil(size[1] * factor))


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Lanczos downscale so that the longest side is max_side (with a cheap box reduction first)."""
    return img.resize(_fit(img.size, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _to_rgb_or_rgba(img: Image.Image, path: Path, notes: List[str]) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB, or RGBA when the image carries transparency."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        notes.append(f"{mode} image converted to 8 bits")
        return Image.fromarray(_to_uint8(np.asarray(img), mode)).convert("RGB")
    if mode == "CMYK" or "icc_profile" in img.info:
        converted = _to_srgb(img, notes)
        if converted is not None:
            return converted
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    target = "RGBA" if has_alpha else "RGB"
    if mode != target:
        notes.append(f"{mode} converted to {target}")
    try:
        return img.convert(target)
    except ValueError as error:
        raise PreprocessError(f"{path}: colour mode {mode} cannot be converted ({error}); save it as RGB") from None


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float single-channel pixels to uint8."""
    values = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if values.max(initial=0.0) > 255 else 255.0
    return np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)


def _to_srgb(img: Image.Image, notes: List[str]) -> Optional[Image.Image]:
    """Colour-managed conversion to sRGB through the embedded ICC profile; None if there is none or it fails."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        output_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode=output_mode)
    except Exception:  # an unusable profile falls back to Pillow's plain conversion
        return None
    if converted is None:
        return None
    notes.append(f"{img.mode} converted to sRGB through its ICC profile")
    return converted

