"""Contextual loss (Mechrez et al. 2018) on VGG16 features: novel views borrow the texture statistics of the reference.

Each feature vector of a novel view is matched to its most similar reference feature regardless of position, so the
seen side's texture can carry to the unseen sides without asking them to look the same pixel for pixel (Make-It-3D's
refine stage). The VGG is frozen, built lazily and kept out of every checkpoint by its owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from single_image_nerf.errors import UserInputError
from single_image_nerf.pretrained import checkpoint_cache, discard, download_url, vgg16_url

VGG16_LAYERS: Dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_1": 11, "relu3_3": 15, "relu4_1": 18, "relu4_3": 22}
"""Index of each named activation in torchvision's vgg16().features."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def contextual_similarity(x: Tensor, y: Tensor, bandwidth: float = 0.5, eps: float = 1e-5) -> Tensor:
    """Contextual similarity CX(x, y) in (0, 1] between feature sets x (N, C) and y (M, C).

    Features are centred on y's mean and normalised; cosine distances d_ij are made relative to each x_i's nearest
    y (d_ij / (min_k d_ik + eps)), turned into affinities exp((1 - d~_ij) / bandwidth), normalised over y, and
    CX = mean over y_j of the best affinity max_i CX_ij.
    """
    mean = y.mean(dim=0, keepdim=True)
    x = nn.functional.normalize(x - mean, dim=-1)
    y = nn.functional.normalize(y - mean, dim=-1)
    distance = (1.0 - x @ y.T).clamp_min(0.0)
    relative = distance / (distance.min(dim=1, keepdim=True).values + eps)
    affinity = torch.softmax((1.0 - relative) / bandwidth, dim=1)
    return affinity.max(dim=0).values.mean()


def contextual_loss(x: Tensor, y: Tensor, bandwidth: float = 0.5) -> Tensor:
    """-log CX(x, y): zero when every reference feature has its own distinct match in x."""
    return -torch.log(contextual_similarity(x, y, bandwidth).clamp_min(1e-8))


def build_vgg16_features(weights: str | Path, last_layer: int) -> nn.Sequential:
    """torchvision's VGG16 feature stack up to `last_layer`, frozen. `weights`: "imagenet" (torchvision's ImageNet
    weights, downloaded once into the project's cache), "random" (tests only), or a local path to a vgg16 state dict
    (.pth; the layers after `last_layer` may be absent)."""
    from torchvision.models import vgg16

    network = vgg16(weights=None)
    stack = network.features[: last_layer + 1].eval()
    if str(weights) == "imagenet":
        url = vgg16_url()
        path = download_url(url, checkpoint_cache() / Path(url).name, "VGG16 ImageNet weights of the contextual loss",
                            "--pipeline.model.contextual-vgg-weights")
        _load_features(stack, path, downloaded=True)
    elif str(weights) != "random":
        path = Path(weights)
        if not path.is_file():
            raise UserInputError(f"VGG16 weights for the contextual loss not found at {path}")
        _load_features(stack, path, downloaded=False)
    for parameter in stack.parameters():
        parameter.requires_grad_(False)
    return stack


def _load_features(stack: nn.Sequential, path: Path, downloaded: bool) -> None:
    """The weights of `stack`'s layers from a torchvision VGG16 state dict (whole network or `features.*` only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} or state
        wanted = stack.state_dict().keys()
        missing = [key for key in wanted if key not in features]
        if missing:
            raise KeyError(f"missing {', '.join(missing[:4])}")
        stack.load_state_dict({key: features[key] for key in wanted})
    except Exception as error:  # not a checkpoint, or not VGG16's
        if downloaded:
            discard(path)  # a damaged download: fetched again next time
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise UserInputError(f"{path} is not a torchvision VGG16 state dict ({first})") from None


class ContextualLoss(nn.Module):
    """-log CX between VGG16 features of renders and of the reference, summed over layers, inside the masks."""

    def __init__(self, weights: str | Path = "imagenet", layers: Sequence[str] = ("relu3_1", "relu4_1"),
                 bandwidth: float = 0.5, image_size: int = 128, max_features: int = 2048) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if unknown or not layers:
            raise UserInputError(f"unknown VGG16 layers {unknown or list(layers)}; choose from {list(VGG16_LAYERS)}")
        self.layers = tuple(layers)
        self.bandwidth = bandwidth
        self.image_size = image_size
        self.max_features = max_features
        self.vgg = build_vgg16_features(weights, max(VGG16_LAYERS[name] for name in self.layers))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> Dict[str, Tensor]:
        """VGG activations (B, C, h, w) at each chosen layer for images (B, 3, H, W) in [0, 1]."""
        x = nn.functional.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False)
        x = (x - self.mean) / self.std
        wanted = {VGG16_LAYERS[name]: name for name in self.layers}
        out: Dict[str, Tensor] = {}
        for index, module in enumerate(self.vgg):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return out

    def _select(self, feature: Tensor, mask: Optional[Tensor]) -> Tensor:
        """(C, h, w) -> (n, C) vectors inside the mask, subsampled evenly to at most max_features."""
        vectors = feature.flatten(1).T
        if mask is not None:
            small = nn.functional.interpolate(mask[None, None].float(), size=feature.shape[-2:], mode="area")[0, 0]
            vectors = vectors[small.flatten() > 0.5]
        if vectors.shape[0] > self.max_features:
            vectors = vectors[torch.linspace(0, vectors.shape[0] - 1, self.max_features).long()]
        return vectors

    def forward(self, renders: Tensor, reference: Tensor, render_masks: Optional[Tensor] = None,
                reference_mask: Optional[Tensor] = None) -> Tensor:
        """Mean over renders (B, 3, H, W) of the layer-summed loss against one reference (3, H', W'); masks are
        (B, H, W) and (H', W') in [0, 1]. Zero when either side has no masked features."""
        self.to(renders.device)
        render_features = self.features(renders)
        with torch.no_grad():
            reference_features = self.features(reference[None])
        total = renders.sum() * 0.0
        for name in self.layers:
            y = self._select(reference_features[name][0], reference_mask)
            for b in range(renders.shape[0]):
                x = self._select(render_features[name][b], None if render_masks is None else render_masks[b])
                if x.shape[0] and y.shape[0]:
                    total = total + contextual_loss(x, y, self.bandwidth) / renders.shape[0]
        return total
