"""A caption of the object from BLIP-2 through transformers (`Blip2ForConditionalGeneration`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Tuple

import numpy as np

from single_image_nerf.preprocess.hub import load_pretrained
from single_image_nerf.pretrained import CAPTION_MODEL_ID

if TYPE_CHECKING:
    import torch

DEFAULT_CAPTION_MODEL = CAPTION_MODEL_ID
FALLBACK_CAPTION = "an object"
"""Written when the model produces no words (for example with untrained weights)."""

_BACKGROUND_SUFFIX = re.compile(r"\s+(on|against|with|in front of|over)\s+(a\s+)?(plain\s+)?white\s+background$")


def load_caption_model(model_id: str, device: "torch.device") -> Tuple[Any, Any]:
    """(model, processor) for BLIP-2 from the hub or a local folder; half precision off the CPU."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    dtype = torch.float32 if device.type == "cpu" else torch.float16
    processor, = load_pretrained((Blip2Processor.from_pretrained,), model_id, "caption", "--caption-model",
                                 "--no-caption")
    model, = load_pretrained((Blip2ForConditionalGeneration.from_pretrained,), model_id, "caption",
                             "--caption-model", "--no-caption", dtype=dtype)
    return model.to(device).eval(), processor


def caption_image(rgb: np.ndarray, model: Any, processor: Any, max_new_tokens: int = 30) -> str:
    """One-line caption of an H×W×3 uint8 image (see `clean_caption`)."""
    import torch

    parameter = next(model.parameters())
    inputs = processor(images=rgb, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        generated = model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens)
    return clean_caption(processor.batch_decode(generated, skip_special_tokens=True)[0])


def clean_caption(text: str) -> str:
    """One line, single spaces, no trailing full stop or "on a white background"; FALLBACK_CAPTION if empty."""
    line = " ".join(str(text).split()).strip().rstrip(".").strip()
    line = _BACKGROUND_SUFFIX.sub("", line).strip()
    return line if line else FALLBACK_CAPTION
