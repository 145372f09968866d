"""A caption of the object through transformers: BLIP (`BlipForConditionalGeneration`, the default
Salesforce/blip-image-captioning-base) or BLIP-2 (`Blip2ForConditionalGeneration`, e.g.
`--caption-model Salesforce/blip2-opt-2.7b`), told apart by the model's config.json."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Tuple

import numpy as np

from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.preprocess.hub import load_pretrained, model_config
from single_image_nerf.pretrained import CAPTION_MODEL_ID, half_variant

if TYPE_CHECKING:
    import torch

DEFAULT_CAPTION_MODEL = CAPTION_MODEL_ID
FALLBACK_CAPTION = "an object"
"""Written when the model produces no words (for example with untrained weights)."""
CAPTION_FAMILIES = {"blip": "BLIP", "blip-2": "BLIP-2"}
"""The captioning models read, by config.json's model_type, and their names."""

_BACKGROUND_SUFFIX = re.compile(r"\s+(on|against|with|in front of|over)\s+(a\s+)?(plain\s+)?white\s+background$")


def load_caption_model(model_id: str, device: "torch.device") -> Tuple[Any, Any, str]:
    """(model, processor, family) for BLIP or BLIP-2 from the hub or a local folder, in eval mode on `device`. BLIP
    (1 GB) runs in fp32 everywhere; BLIP-2 (15 GB in fp32) in fp16 off the CPU, fetched as fp16 files where
    published."""
    import torch
    from transformers import AutoProcessor, Blip2ForConditionalGeneration, BlipForConditionalGeneration

    family = model_config(model_id, "caption", "--caption-model", "--no-caption").get("model_type")
    if family not in CAPTION_FAMILIES:
        raise PreprocessError(f"the caption model '{model_id}' is a {family!r} model, not BLIP or BLIP-2; pass one with "
                              f"--caption-model (default {DEFAULT_CAPTION_MODEL}), or skip this step with --no-caption")
    dtype = torch.float16 if family == "blip-2" and device.type != "cpu" else torch.float32
    model_class = {"blip": BlipForConditionalGeneration, "blip-2": Blip2ForConditionalGeneration}[family]
    processor, = load_pretrained((AutoProcessor.from_pretrained,), model_id, "caption", "--caption-model",
                                 "--no-caption")
    model, = load_pretrained((model_class.from_pretrained,), model_id, "caption", "--caption-model", "--no-caption",
                             variant=half_variant(dtype), dtype=dtype)
    return model.to(device=device, dtype=dtype).eval(), processor, family


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
