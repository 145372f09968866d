"""Make-It-3D's CLIP guidance: at small timesteps the one-step-denoised novel view should look, to CLIP, like the
reference image and like the prompt. Off by default; the Stable Diffusion guidance calls it on its denoised views.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from single_image_nerf.guidance.loading import freeze, load_component
from single_image_nerf.pretrained import CLIP_GUIDANCE_ID, resolve_hub_weights

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""CLIP's input normalisation, used when the model folder has no preprocessor_config.json."""
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""See OPENAI_CLIP_MEAN."""


@dataclass
class ClipGuidanceConfig:
    """Make-It-3D's CLIP losses on the denoised novel view at small timesteps."""

    enabled: bool = False
    """Add the CLIP losses (loads a second model)."""
    model_path: str = CLIP_GUIDANCE_ID
    """Hub id or local folder of a transformers CLIPModel."""
    image_weight: float = 10.0
    """Weight of 1 - cos(CLIP(denoised view), CLIP(reference image)) (Make-It-3D uses 10)."""
    text_weight: float = 10.0
    """Weight of 1 - cos(CLIP(denoised view), CLIP(prompt)) (Make-It-3D uses 10)."""
    max_t: float = 0.4
    """The CLIP losses apply to views whose timestep is at most this fraction of the schedule (Make-It-3D: 0.4)."""
    replace_sds: bool = True
    """On those views, use the CLIP losses instead of SDS (as Make-It-3D does) rather than in addition to it."""
    prompt: Optional[str] = None
    """Text for CLIP; None: the guidance's prompt, with a learned token replaced by its initializer word."""
    background: float = 1.0
    """Grey level the reference image is composited over before CLIP sees it (renders use a white background)."""


def _features(output) -> Tensor:
    """Projected features from `get_image_features`/`get_text_features` (a tensor in transformers 4, an output with
    `pooler_output` in transformers 5)."""
    return output if isinstance(output, Tensor) else output.pooler_output


class ClipGuidance:
    """Frozen CLIPModel with the reference image's and the prompt's features precomputed."""

    def __init__(self, config: ClipGuidanceConfig, device: torch.device, reference_rgba: Tensor, text: str,
                 flag: str = "--pipeline.guidance.clip.model-path") -> None:
        from transformers import CLIPModel, CLIPTokenizer

        self.config = config
        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = config.model_path
        folder = resolve_hub_weights(model, "CLIP model", flag, ("config.json",))
        self.model = freeze(load_component(CLIPModel.from_pretrained, folder, model, flag).to(device, self.dtype))
        tokenizer = load_component(CLIPTokenizer.from_pretrained, folder, model, flag)
        self.size = int(self.model.config.vision_config.image_size)
        mean, std = self._normalisation(folder)
        self.mean = torch.tensor(mean, device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).reshape(1, 3, 1, 1)
        with torch.no_grad():
            rgba = reference_rgba.to(device).float()
            reference = rgba[..., :3] * rgba[..., 3:] + config.background * (1.0 - rgba[..., 3:])
            self.reference_features = self.image_features(reference.permute(2, 0, 1)[None])
            ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            self.text_features = F.normalize(_features(self.model.get_text_features(input_ids=ids)).float(), dim=-1)

    @staticmethod
    def _normalisation(folder: Path):
        path = folder / "preprocessor_config.json"
        if path.is_file():
            processor = json.loads(path.read_text())
            return processor.get("image_mean", OPENAI_CLIP_MEAN), processor.get("image_std", OPENAI_CLIP_STD)
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    def image_features(self, images: Tensor) -> Tensor:
        """Unit-length CLIP features of (B, 3, H, W) images in [0, 1] (differentiable in the images)."""
        pixels = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", align_corners=False,
                               antialias=images.shape[-1] > self.size)
        pixels = (pixels - self.mean) / self.std
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels.to(self.dtype))).float(),
                           dim=-1)

    def loss(self, images: Tensor) -> Dict[str, Tensor]:
        """Weighted 1 - cosine similarity of the views' CLIP features to the reference's and to the prompt's."""
        features = self.image_features(images)
        image_similarity = (features * self.reference_features).sum(dim=-1)
        text_similarity = (features * self.text_features).sum(dim=-1)
        return {
            "clip_image_loss": self.config.image_weight * (1.0 - image_similarity).mean(),
            "clip_text_loss": self.config.text_weight * (1.0 - text_similarity).mean(),
        }
