"""Several photos of one object: their cameras, the folder layout that holds them, and the checks that they agree.

The first photo is the main reference (azimuth 0). Each azimuth is where that photo's camera stands relative to the
main one, in the project's orbit convention: degrees from the object's front, counter-clockwise seen from above, the
camera orbiting a still object (+X toward +Y about +Z, `data/camera_sampling.py`). Azimuths are taken relative to
the first one given, so `--azimuths 90 270` means the same as `--azimuths 0 180`.

Layout: the main view's files stay at the top of the folder exactly as for one photo; view i (from 1) is a folder
`views/i/` holding its own rgba.png, depth.npy, depth_preview.png and meta.json (each a valid one-photo folder), and
the top meta.json lists every view under `views` (main first) with its folder and azimuth.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from single_image_nerf.preprocess.errors import PreprocessError

VIEWS_KEY = "views"
"""meta.json key listing every view of a several-photo folder: [{"folder", "azimuth_deg", "photo"}, ...]."""
VIEWS_DIR = "views"
"""Folder, under the data folder, that holds the extra views."""
REDO_VIEWS = ("rerun sin-preprocess with every photo and their --azimuths (e.g. sin-preprocess front.jpg back.jpg "
              "--azimuths 0 180 --output data/NAME)")
"""The fix of a broken several-photo folder: it is made again from all its photos at once."""
MAX_HEIGHT_RATIO = 1.5
"""Largest ratio between two views' mask heights (each relative to its photo's longer side) that is accepted: a
larger one means different objects, distances or zoom."""


def view_folder(index: int) -> str:
    """The folder of view `index` relative to the data folder: '.' for the main view, 'views/INDEX' otherwise."""
    return "." if index == 0 else f"{VIEWS_DIR}/{index}"


def relative_azimuths(photos: Sequence[str], azimuths: Optional[Sequence[float]]) -> List[float]:
    """Each photo's azimuth relative to the first photo's, in [0, 360); one PreprocessError line for a count that
    does not match, a value that is not a finite angle, or two photos at one azimuth."""
    if azimuths is None:
        if len(photos) > 1:
            raise PreprocessError(f"{len(photos)} photos need their cameras' azimuths: add --azimuths with one angle per "
                                  f"photo, the first 0 (e.g. --azimuths 0 180)")
        return [0.0]
    if len(azimuths) != len(photos):
        raise PreprocessError(f"{len(photos)} photo{'s' if len(photos) > 1 else ''} but {len(azimuths)} azimuth"
                              f"{'s' if len(azimuths) != 1 else ''}: give one azimuth per photo, in the photos' order")
    for value in azimuths:
        if not (math.isfinite(value) and -360.0 <= value <= 360.0):
            raise PreprocessError(f"azimuth {value} is not an angle in [-360, 360] degrees: give the camera's position "
                                  f"from the object's front, counter-clockwise seen from above")
    check_distinct_photos(photos, azimuths)
    relative = [float((value - azimuths[0]) % 360.0) for value in azimuths]
    relative = [0.0 if abs(value - 360.0) < 1e-9 else value for value in relative]
    for later, value in enumerate(relative):
        for earlier in range(later):
            if abs(relative[earlier] - value) < 1e-6:
                raise PreprocessError(
                    f"{photos[earlier]} and {photos[later]} are both at azimuth {azimuths[later]:g}: two photos from "
                    f"one side add nothing; give each photo its own azimuth, or leave one out")
    return relative


def check_distinct_photos(photos: Sequence[str], azimuths: Sequence[float]) -> None:
    """Refuses one file given as two photos (by path, or the same file under two names): it would give a second
    side the first side's picture."""
    for later, photo in enumerate(photos):
        for earlier in range(later):
            if _same_file(photos[earlier], photo):
                also = "" if photos[earlier] == photo else f", the second time as {photo}"
                raise PreprocessError(
                    f"{photos[earlier]} is given twice (at azimuths {azimuths[earlier]:g} and {azimuths[later]:g}"
                    f"{also}): one photo shows one side of the object; give each azimuth its own photo, or leave one "
                    "out")


def _same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (one path, a link to it, or a hard link); paths that do not exist compare as
    written, resolved."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)


def view_elevations(count: int, elevation: float, elevations: Optional[Sequence[float]]) -> List[float]:
    """Each photo's elevation: `elevations` (one per photo) or `elevation` (0 unless given) for all."""
    if elevations is None:
        return [float(elevation)] * count
    if elevation != 0.0:
        raise PreprocessError("--elevation and --elevations were both given: give --elevations (one per photo) or "
                              "--elevation (the same for every photo)")
    if len(elevations) != count:
        raise PreprocessError(f"{count} photos but {len(elevations)} elevations: give one elevation per photo, or "
                              f"one --elevation for all")
    for value in elevations:
        if not (math.isfinite(value) and -89.0 <= value <= 89.0):
            raise PreprocessError(f"elevation {value} is outside [-89, 89] degrees; 0 is a photo taken level")
    return [float(value) for value in elevations]


def check_alpha_kinds(photos: Sequence[str], has_alpha: Sequence[bool]) -> None:
    """Refuses a mix of cut-outs (transparency) and photos without it when their own alpha would be their mask."""
    if any(has_alpha) and not all(has_alpha):
        with_alpha = photos[list(has_alpha).index(True)]
        without = photos[list(has_alpha).index(False)]
        raise PreprocessError(
            f"{with_alpha} has transparency but {without} has none, so their masks would come from different "
            f"sources: give every photo as a cut-out with alpha or none, or pass --mask-from sam (or grabcut) to mask "
            f"them all alike")


def mask_heights(bboxes: Sequence[Tuple[int, int, int, int]], shapes: Sequence[Tuple[int, int]]) -> List[float]:
    """Each view's mask height as a fraction of its photo's longer side ((height, width) shapes)."""
    return [(y1 - y0) / float(max(shape)) for (_, y0, _, y1), shape in zip(bboxes, shapes)]


def check_mask_heights(photos: Sequence[str], heights: Sequence[float], ratio: float = MAX_HEIGHT_RATIO) -> None:
    """Refuses views whose mask heights (fractions of their photos' longer sides) differ by more than `ratio`."""
    tallest, shortest = int(np.argmax(heights)), int(np.argmin(heights))
    if heights[tallest] > ratio * heights[shortest]:
        raise PreprocessError(
            f"the object is {heights[tallest]:.0%} of {photos[tallest]}'s longer side high but {heights[shortest]:.0%} "
            f"of {photos[shortest]}'s (ratio {heights[tallest] / heights[shortest]:.2f}, above {ratio:g}): the photos "
            f"must show one object from about the same distance and zoom, uncropped; retake or leave one out")
