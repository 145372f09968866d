"""Several reference views of one object: the folder sin-preprocess writes from several photos, read back.

The top meta.json lists every view under `views` (main first, folder '.'), each with its folder and its azimuth
relative to the main view (docs/inputs.md). Every view's rgba.png was cut alike from its photo (one scale, the
rotation axis at the centre), so every view gets the same window here: with `recenter`, the smallest square about
the images' centre that leaves `border` empty around every view's object (the main view alone would be recentred
on its own object, which would move the axis); without it, the whole image. Pure functions of files and arrays.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from single_image_nerf.data.reference_image import FOLDER_IMAGE, load_depth, load_rgba, object_box, resample_view
from single_image_nerf.errors import UserInputError
from single_image_nerf.preprocess.views import REDO_VIEWS as FIX, VIEWS_KEY


@dataclass(frozen=True)
class ViewEntry:
    """One view as the data folder lists it."""

    folder: Path
    """The view's folder (the data folder itself for the main view)."""
    azimuth: float
    """Azimuth of the view's camera in degrees, relative to the main view's (0 for the main view)."""


@dataclass
class ReferenceViewImage:
    """One reference view after the common recentring."""

    rgba: np.ndarray
    """(S, S, 4) float32 in [0, 1]; alpha is the foreground mask."""
    depth: Optional[np.ndarray]
    """(S, S) float32 relative depth (larger = farther) on the foreground, NaN where unknown; None if absent."""
    entry: ViewEntry
    """Where it came from and its azimuth."""


def view_entries(data: Path) -> Optional[List[ViewEntry]]:
    """The views of a several-photo data folder, main first; None for an image or a one-photo folder. One line for
    a view list that is malformed, repeats an azimuth, or names a folder that is missing or outside the data."""
    data = Path(data)
    meta_path = data / "meta.json"
    if not (data.is_dir() and meta_path.is_file()):
        return None
    try:
        listed = json.loads(meta_path.read_text(encoding="utf-8")).get(VIEWS_KEY)
    except (ValueError, AttributeError):
        return None  # an unreadable meta.json is refused by inputs.check_data with its own line
    if listed is None:
        return None
    if not isinstance(listed, list) or not listed or not all(isinstance(item, dict) for item in listed):
        raise UserInputError(f"{meta_path}: '{VIEWS_KEY}' must be a list of views ({{\"folder\", \"azimuth_deg\"}}); "
                             f"{FIX}")
    entries: List[ViewEntry] = []
    for index, item in enumerate(listed):
        folder, azimuth = item.get("folder"), item.get("azimuth_deg")
        where = f"{meta_path}: view {index}"
        if isinstance(azimuth, bool) or not isinstance(azimuth, (int, float)) or not math.isfinite(azimuth):
            raise UserInputError(f"{where} has no azimuth_deg number (got {azimuth!r}); {FIX}")
        if not isinstance(folder, str) or (index == 0) != (folder == "."):
            raise UserInputError(f"{where}: folder must be '.' for the first view and a subfolder for the others, got "
                                 f"{folder!r}; {FIX}")
        path = (data / folder).resolve()
        if index > 0 and (data.resolve() not in path.parents or not (path / FOLDER_IMAGE).is_file()):
            raise UserInputError(f"{where}: {data / folder} is not a folder holding {FOLDER_IMAGE} inside {data}; {FIX}")
        if any(abs(((azimuth - e.azimuth) + 180.0) % 360.0 - 180.0) < 1e-6 for e in entries):
            raise UserInputError(f"{where} repeats azimuth {azimuth:g}: every view needs its own azimuth; {FIX}")
        entries.append(ViewEntry(folder=data if index == 0 else data / folder, azimuth=float(azimuth)))
    if entries[0].azimuth != 0.0:
        raise UserInputError(f"{meta_path}: the first view's azimuth_deg must be 0 (azimuths are relative to it), got "
                             f"{entries[0].azimuth:g}; {FIX}")
    return entries


def read_reference_views(entries: List[ViewEntry], size: int, border: float, recenter: bool) -> List[ReferenceViewImage]:
    """Every view's RGBA and depth, cut by one common window (see the module's docstring) at `size` pixels."""
    from single_image_nerf.preprocess.recentre import common_square_crops

    images = [load_rgba(entry.folder / FOLDER_IMAGE) for entry in entries]
    depths = [load_depth(entry.folder, image.shape[:2]) for entry, image in zip(entries, images)]
    shapes = [image.shape[:2] for image in images]
    if recenter:
        boxes = [object_box(image[..., 3]) for image in images]  # (row0, col0, row1, col1)
        crops = common_square_crops([(c0, r0, c1, r1) for r0, c0, r1, c1 in boxes], shapes, border, size)
        windows = [((crop.y0 + crop.side / 2.0, crop.x0 + crop.side / 2.0), float(crop.side)) for crop in crops]
    else:
        windows = [((height / 2.0, width / 2.0), float(max(height, width))) for height, width in shapes]
    views = []
    for entry, image, depth, (centre, side) in zip(entries, images, depths, windows):
        rgba, depth = resample_view(image, depth, centre, side, size)
        views.append(ReferenceViewImage(rgba=rgba, depth=depth, entry=entry))
    return views
