"""Foreground by Segment Anything (the segment-anything package): checkpoint lookup and download, loading, prompting.

segment-anything is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.preprocess.masking import Box, select_object_mask
from single_image_nerf.pretrained import (SAM_CHECKPOINT_FILES, ModelUnavailableError, checkpoint_cache, discard,
                                          download_url, sam_checkpoint_url)

Point = Tuple[float, float]


def sam_cache_dirs() -> Tuple[Path, ...]:
    """Folders searched for an official checkpoint: the project's download cache, then the folders earlier versions
    and other tools used (~/.cache/single-image-nerf, torch hub's checkpoints)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (checkpoint_cache(), cache / "single-image-nerf", Path(torch.hub.get_dir()) / "checkpoints")


def find_sam_checkpoint(model_type: str, checkpoint: Optional[Union[str, Path]] = None) -> Path:
    """The checkpoint file to load: the given path, else the official file in one of `sam_cache_dirs`, else the
    official file downloaded (once, with a progress bar) into the project's cache."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise PreprocessError(f"SAM checkpoint {path} not found; check the path given to --sam-checkpoint")
        return path
    name = SAM_CHECKPOINT_FILES.get(model_type)
    if name is None:
        raise PreprocessError(f"SAM model '{model_type}' has no default checkpoint; pass --sam-checkpoint PATH")
    for folder in sam_cache_dirs():
        if (folder / name).is_file():
            return folder / name
    try:
        return download_url(sam_checkpoint_url(model_type), checkpoint_cache() / name, f"SAM {model_type} checkpoint",
                            "--sam-checkpoint")
    except ModelUnavailableError as error:
        raise PreprocessError(f"{error} (or use --mask-from grabcut, which needs no weights)") from None


def load_sam(model_type: str, checkpoint: Optional[Union[str, Path]], device: torch.device) -> Any:
    """A SAM model from segment-anything's registry with weights from `find_sam_checkpoint`, in eval mode."""
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        choices = ", ".join(k for k in sam_model_registry if k != "default")
        raise PreprocessError(f"unknown SAM model '{model_type}'; choose one of {choices}")
    path = find_sam_checkpoint(model_type, checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean the same thing to the user
        if path.parent == checkpoint_cache():
            discard(path)  # our own download, damaged on disk: the next run fetches it again
        raise PreprocessError(
            f"{path}: not a readable SAM checkpoint ({_first_line(error)}); download it again"
        ) from None
    model = sam_model_registry[model_type](checkpoint=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise PreprocessError(
            f"{path} does not fit SAM {model_type} ({_first_line(error)}); pass the --sam-model of that checkpoint"
        ) from None
    return model.to(device).eval()


def sam_mask(
    rgb: np.ndarray,
    model: Any,
    box: Optional[Box] = None,
    points: Optional[Sequence[Point]] = None,
    point_labels: Optional[Sequence[int]] = None,
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Boolean foreground mask of `rgb` (H×W×3 uint8) from SAM, and a record of the prompt and choice.

    With a box and/or points, SAM is prompted with them (points labelled 1 foreground, 0 background; all 1 when
    no labels are given). With neither, SAM is prompted at the centre and four points around it, and the best
    whole-object mask near the centre is chosen among the 15 candidates (`select_object_mask`).
    """
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(np.ascontiguousarray(rgb))
    height, width = rgb.shape[:2]
    points = list(points or [])
    labels = list(point_labels) if point_labels is not None else [1] * len(points)
    if len(labels) != len(points):
        raise PreprocessError(f"{len(points)} points but {len(labels)} point labels; give one label per point")
    if box is None and not points:
        prompts = [(width / 2, height / 2)] + [
            (width / 2 + dx * width / 8, height / 2 + dy * height / 8) for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1))
        ]
        masks, qualities = [], []
        for x, y in prompts:
            out, quality, _ = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
            masks.extend(out)
            qualities.extend(quality.tolist())
        index = select_object_mask(masks, qualities)
        prompt: Dict[str, Any] = {"points": [list(p) for p in prompts], "labels": [1] * len(prompts), "box": None}
    else:
        multimask = box is None and len(points) == 1
        masks, quality, _ = predictor.predict(
            point_coords=np.array(points, dtype=np.float64) if points else None,
            point_labels=np.array(labels) if points else None,
            box=np.array(box, dtype=np.float64) if box is not None else None,
            multimask_output=multimask,
        )
        masks, qualities = list(masks), quality.tolist()
        centre = tuple(points[0]) if multimask else None
        index = select_object_mask(masks, qualities, centre) if multimask else 0
        prompt = {"points": [list(p) for p in points], "labels": labels, "box": list(box) if box else None}
    chosen = np.asarray(masks[index], dtype=bool) if index >= 0 else np.zeros((height, width), bool)
    info = {"prompt": prompt, "candidates": len(masks), "predicted_iou": float(qualities[index]) if index >= 0 else None}
    return chosen, info


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
