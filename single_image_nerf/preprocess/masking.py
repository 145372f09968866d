"""Foreground masks without learned weights: from alpha, cleaning, choosing among candidates, and GrabCut.

SAM lives in `sam.py`; it produces candidates that `select_object_mask` ranks. Everything here is a pure function
of numpy arrays.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

Box = Tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels, x to the right and y down; x1 and y1 exclusive."""

ALPHA_THRESHOLD = 128
"""Alpha (0..255) at or above which a pixel is foreground."""
GRABCUT_MARGIN = 0.02
"""Fraction of each side outside GrabCut's default box: GrabCut takes it as background."""
MAX_EDGE_SHARE = 0.1
"""Largest share of an object's outline that may lie along one edge of its photo; more means the frame cuts the
object (a tangent touch of a round object is a few percent)."""
EDGES = ("top", "bottom", "left", "right")


def mask_from_alpha(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> np.ndarray:
    """Boolean foreground mask from an H×W uint8 alpha channel."""
    return np.asarray(alpha) >= threshold


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (all False if the mask is empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray, max_hole_fraction: Optional[float] = None) -> np.ndarray:
    """Fills holes (background regions not connected to the image border) of a boolean mask.

    With `max_hole_fraction`, only holes smaller than that fraction of the mask's area are filled, so that real
    openings (a mug's handle, a ring) stay open while speckles close.
    """
    filled = ndimage.binary_fill_holes(mask)
    if max_hole_fraction is None:
        return filled
    holes, count = ndimage.label(filled & ~mask)
    if count == 0:
        return filled
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_hole_fraction * max(int(mask.sum()), 1)
    small[0] = False
    return mask | small[holes]


def clean_mask(mask: np.ndarray, max_hole_fraction: Optional[float] = None) -> np.ndarray:
    """Largest connected component with its holes filled (see `fill_holes`)."""
    return fill_holes(largest_component(np.asarray(mask, dtype=bool)), max_hole_fraction)


def clean_alpha(alpha: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
    """Soft alpha restricted to the cleaned mask: keeps anti-aliased edges, drops stray blobs, closes filled holes."""
    near = ndimage.binary_dilation(cleaned, iterations=1)
    out = np.where(near, alpha, 0).astype(np.uint8)
    out[cleaned & (alpha < ALPHA_THRESHOLD)] = 255
    return out


def mask_score(mask: np.ndarray, predicted_quality: float, centre: Optional[Tuple[float, float]] = None) -> float:
    """How likely a candidate is the whole object near `centre`; higher is better, -inf for an empty mask.

    The model's own quality estimate, plus a reward for size (whole objects over parts), minus the fraction of
    the image border it covers (backgrounds touch the border) and the distance of its centroid from `centre`
    ((x, y) in pixels, default the image centre) relative to the image diagonal.
    """
    height, width = mask.shape
    area = float(mask.mean())
    if area == 0.0:
        return float("-inf")
    cx, cy = centre if centre is not None else (width / 2.0, height / 2.0)
    border = np.concatenate([mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1]]).mean()
    ys, xs = np.nonzero(mask)
    offset = np.hypot(xs.mean() + 0.5 - cx, ys.mean() + 0.5 - cy) / np.hypot(width, height)
    return float(predicted_quality + 0.5 * min(area / 0.4, 1.0) - 1.5 * border - 1.0 * offset)


def select_object_mask(
    masks: Sequence[np.ndarray], qualities: Sequence[float], centre: Optional[Tuple[float, float]] = None
) -> int:
    """Index of the best whole-object mask near `centre` among candidates (see `mask_score`); -1 if all empty."""
    scores = [mask_score(np.asarray(m, dtype=bool), float(q), centre) for m, q in zip(masks, qualities)]
    if not scores or max(scores) == float("-inf"):
        return -1
    return int(np.argmax(scores))


def edge_shares(mask: np.ndarray, band: Tuple[int, int] = (1, 1)) -> Dict[str, float]:
    """Share of a boolean mask's outline (its pixels with a 4-neighbour off the object, the image's edge counted as
    off it) that lies within `band` (rows, columns) pixels of each edge of the image, by edge name."""
    mask = np.asarray(mask, dtype=bool)
    interior = ndimage.binary_erosion(np.pad(mask, 1), structure=ndimage.generate_binary_structure(2, 1))[1:-1, 1:-1]
    outline = mask & ~interior
    total = max(int(outline.sum()), 1)
    rows, cols = max(int(band[0]), 1), max(int(band[1]), 1)
    strips = {"top": outline[:rows], "bottom": outline[-rows:], "left": outline[:, :cols], "right": outline[:, -cols:]}
    return {edge: float(strip.sum()) / total for edge, strip in strips.items()}


def cut_edge(mask: np.ndarray, band: Tuple[int, int] = (1, 1), share: float = MAX_EDGE_SHARE
             ) -> Optional[Tuple[str, float]]:
    """The edge of the image along which the most of the mask's outline lies, and that share, when it is above
    `share` (the frame cuts the object there); None otherwise."""
    shares = edge_shares(mask, band)
    edge = max(EDGES, key=shares.__getitem__)
    return (edge, shares[edge]) if shares[edge] > share else None


def default_box(width: int, height: int, margin: float = GRABCUT_MARGIN) -> Box:
    """A box covering the image but a margin on each side: the prompt when the user gives none."""
    return (margin * width, margin * height, (1.0 - margin) * width, (1.0 - margin) * height)


def grabcut_mask(rgb: np.ndarray, box: Optional[Box] = None, iterations: int = 5, work_side: int = 512) -> np.ndarray:
    """Foreground by OpenCV's GrabCut inside `box` (default: all but a 2% margin), with no learned weights.

    Runs at `work_side` px on the longest side for speed and returns a boolean mask at the input size.
    """
    import cv2

    height, width = rgb.shape[:2]
    factor = min(1.0, work_side / max(height, width))
    small = cv2.resize(rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA)
    box = box if box is not None else default_box(width, height)
    x0, y0, x1, y1 = (int(round(v * factor)) for v in box)
    x0, y0 = max(0, min(x0, small.shape[1] - 2)), max(0, min(y0, small.shape[0] - 2))
    x1, y1 = max(x0 + 2, min(x1, small.shape[1])), max(y0 + 2, min(y1, small.shape[0]))
    labels = np.zeros(small.shape[:2], np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(
        np.ascontiguousarray(small[..., ::-1]), labels, (x0, y0, x1 - x0, y1 - y0), background, foreground,
        iterations, cv2.GC_INIT_WITH_RECT,
    )
    small_mask = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    return cv2.resize(small_mask, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
