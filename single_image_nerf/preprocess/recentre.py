"""Recentring, as pure functions: a square around the object's box with a border, resampled to a fixed size.

`border` is the fraction of the output side left empty on each side of the object's longer side: with border 0.15
the object's longer side spans 70% of the square, centred. The same `SquareCrop` is applied to the colour, the
alpha and the depth, so they stay aligned pixel for pixel.

Several photos of one object (`common_square_crops`) are cut alike instead: each view's square is centred on its
photo's centre and is the same fraction of its photo's longer side, the smallest that leaves `border` empty around
every view's object. Under the orbit camera (it looks at the object's centre, from the same distance with the same
zoom in every photo) this keeps one scale and one rotation axis, at the square's centre, in every view; cutting each
photo around its own mask would change the object's size with its width and move the axis sideways between views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from single_image_nerf.preprocess.errors import PreprocessError

_UPSCALE = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class SquareCrop:
    """A square window of an image (it may reach past the image's edges) and the size it is resampled to."""

    x0: int
    """Left edge of the window in image pixels (may be negative)."""
    y0: int
    """Top edge of the window in image pixels (may be negative)."""
    side: int
    """Side of the window in image pixels."""
    size: int
    """Side of the output in pixels."""

    @property
    def box(self) -> Tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the window in image pixels, x1 and y1 exclusive."""
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    def box_in_original(self, scale: float) -> Tuple[float, float, float, float]:
        """The window in the pixels of an image `1/scale` times larger (the full-resolution photo)."""
        return tuple(float(v) / scale for v in self.box)  # type: ignore[return-value]

    def apply(self, array: np.ndarray, upscale: str = "linear") -> np.ndarray:
        """Cuts the window out of an H×W[×C] array (zeros past the edges) and resamples it to size×size.

        Downscaling averages (area); upscaling uses `upscale` (nearest, linear or cubic). uint8 stays uint8.
        """
        height, width = array.shape[:2]
        window = np.zeros((self.side, self.side) + array.shape[2:], dtype=array.dtype)
        sx0, sy0 = max(self.x0, 0), max(self.y0, 0)
        sx1, sy1 = min(self.x0 + self.side, width), min(self.y0 + self.side, height)
        if sx1 > sx0 and sy1 > sy0:
            window[sy0 - self.y0 : sy1 - self.y0, sx0 - self.x0 : sx1 - self.x0] = array[sy0:sy1, sx0:sx1]
        if self.side == self.size:
            return window
        interpolation = cv2.INTER_AREA if self.side > self.size else _UPSCALE[upscale]
        return cv2.resize(window, (self.size, self.size), interpolation=interpolation)


def mask_bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the True pixels, x1 and y1 exclusive; PreprocessError if there are none."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        raise PreprocessError("the foreground mask is empty; give a --box or --points around the object")
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


def square_crop(bbox: Tuple[int, int, int, int], border: float, size: int) -> SquareCrop:
    """The square window centred on `bbox` whose side leaves `border` of it empty on each side of the longer side."""
    _check_border_size(border, size)
    x0, y0, x1, y1 = bbox
    longest = max(x1 - x0, y1 - y0, 1)
    side = max(1, math.ceil(longest / (1.0 - 2.0 * border)))
    left = int(math.floor((x0 + x1) / 2.0 - side / 2.0 + 0.5))
    top = int(math.floor((y0 + y1) / 2.0 - side / 2.0 + 0.5))
    return SquareCrop(x0=left, y0=top, side=side, size=size)


def _check_border_size(border: float, size: int) -> None:
    if not 0.0 <= border < 0.5:
        raise PreprocessError(f"border {border} is outside [0, 0.5); give a fraction such as 0.15")
    if size < 1:
        raise PreprocessError(f"output size {size} must be a positive number of pixels, such as 512")


def common_square_crops(
    bboxes: Sequence[Tuple[int, int, int, int]], shapes: Sequence[Tuple[int, int]], border: float, size: int
) -> List[SquareCrop]:
    """One square per view: centred on its photo's centre, the same fraction of every photo's longer side, the
    smallest that leaves `border` of its side empty around each view's object box. `shapes` are (height, width)."""
    _check_border_size(border, size)
    fraction = 0.0
    for (x0, y0, x1, y1), (height, width) in zip(bboxes, shapes):
        reach = max(width / 2.0 - x0, x1 - width / 2.0, height / 2.0 - y0, y1 - height / 2.0, 0.5)
        fraction = max(fraction, 2.0 * reach / ((1.0 - 2.0 * border) * max(height, width)))
    crops = []
    for height, width in shapes:
        side = max(1, math.ceil(fraction * max(height, width) - 1e-9))
        left, top = int(math.floor((width - side) / 2.0 + 0.5)), int(math.floor((height - side) / 2.0 + 0.5))
        crops.append(SquareCrop(x0=left, y0=top, side=side, size=size))
    return crops


def recentre(rgb: np.ndarray, alpha: np.ndarray, border: float, size: int) -> Tuple[np.ndarray, SquareCrop]:
    """size×size×4 uint8 RGBA of the object centred with `border`, from H×W×3 colour and H×W uint8 alpha."""
    crop = square_crop(mask_bbox(alpha > 0), border, size)
    return apply_crop(rgb, alpha, crop), crop


def apply_crop(rgb: np.ndarray, alpha: np.ndarray, crop: SquareCrop) -> np.ndarray:
    """size×size×4 uint8 RGBA of `crop` cut from H×W×3 colour and H×W uint8 alpha.

    Colour is resampled premultiplied by alpha, so edge pixels keep the object's colour instead of picking up the
    photo's background (no dark or coloured fringes); fully transparent pixels come out black.
    """
    weight = alpha.astype(np.uint16)[..., None]
    premultiplied = np.dstack([rgb.astype(np.uint16) * weight, weight * 257])  # 16 bits: exact up to 255·255
    resampled = crop.apply(premultiplied, upscale="linear").astype(np.float32)
    coverage = resampled[..., 3:] / 257.0
    opacity = np.clip(np.round(coverage[..., 0]), 0, 255).astype(np.uint8)
    colour = resampled[..., :3] / np.maximum(coverage, 1e-3)
    colour = np.where(opacity[..., None] > 0, np.clip(np.round(colour), 0, 255), 0).astype(np.uint8)
    return np.dstack([colour, opacity])
