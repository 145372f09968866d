"""Monocular depth of the photo from DPT through transformers (`DPTForDepthEstimation`).

DPT (MiDaS) predicts relative inverse depth: larger values are nearer, up to an unknown scale and shift. The
pipeline saves it as is and writes `"depth_convention": "disparity"` in meta.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import numpy as np

from single_image_nerf.preprocess.hub import load_pretrained
from single_image_nerf.pretrained import DEPTH_MODEL_ID

if TYPE_CHECKING:
    import torch

DEFAULT_DEPTH_MODEL = DEPTH_MODEL_ID
DEPTH_CONVENTION = "disparity"
"""What DPT's output means: relative inverse depth, larger is nearer."""


def load_depth_model(model_id: str, device: "torch.device") -> Tuple[Any, Any]:
    """(model, image processor) for a DPT depth model from the hub or a local folder, in eval mode on `device`."""
    from transformers import AutoImageProcessor, DPTForDepthEstimation

    processor, model = load_pretrained((AutoImageProcessor.from_pretrained, DPTForDepthEstimation.from_pretrained),
                                       model_id, "depth", "--depth-model", "--no-depth")
    return model.to(device).eval(), processor


def estimate_depth(rgb: np.ndarray, model: Any, processor: Any) -> np.ndarray:
    """H×W float32 relative inverse depth (disparity) of an H×W×3 uint8 image, at the image's resolution."""
    import torch

    parameter = next(model.parameters())
    inputs = processor(images=rgb, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        predicted = model(pixel_values=pixel_values).predicted_depth
        resized = torch.nn.functional.interpolate(
            predicted[:, None].float(), size=rgb.shape[:2], mode="bicubic", align_corners=False
        )
    return resized[0, 0].cpu().numpy().astype(np.float32)


def depth_preview(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 picture of the foreground depth (bright = larger value), white outside the mask."""
    import cv2

    preview = np.full(depth.shape + (3,), 255, np.uint8)
    if not mask.any():
        return preview
    values = depth[mask]
    low, high = float(values.min()), float(values.max())
    scaled = np.clip((depth - low) / max(high - low, 1e-12), 0.0, 1.0)
    coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    preview[mask] = coloured[mask]
    return preview
