"""Image and geometry metrics for evaluation: PSNR, SSIM, optional LPIPS and CLIP similarity, Chamfer, F-score.

Images are `Float[Tensor, "B 3 H W"]` in [0, 1]; image metrics return one value per image (B,). The optional
learned metrics return None when their weights cannot be had (LPIPS: not already in torch's hub cache; CLIP: not
cached and not downloadable), which the evaluation reports as "n/a".
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from single_image_nerf.pretrained import ModelUnavailableError, resolve_hub_weights

ImageMetric = Callable[[Tensor, Tensor], Tensor]


def psnr(pred: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(range^2 / MSE); +inf for identical images."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1D Gaussian window of `size` taps."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    window = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return window / window.sum()


def ssim(
    pred: Float[Tensor, "B C H W"],
    target: Float[Tensor, "B C H W"],
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004): Gaussian-weighted local statistics over the valid
    region (no padding), averaged over pixels and channels. Images smaller than the window use a window as large
    as the smaller side (odd)."""
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    window_size = min(window_size, pred.shape[-1], pred.shape[-2])
    window_size -= (window_size + 1) % 2
    window = gaussian_window(window_size, sigma).to(pred.device)
    horizontal = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2.0 * cov + c2) / (var_x + var_y + c2)
    return (luminance * structure).flatten(1).mean(dim=1)


def _torchvision_weights_cached(url: str) -> bool:
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file()


def load_lpips(device: torch.device | str = "cpu", net: str = "alex") -> Optional[ImageMetric]:
    """LPIPS (lower is better) as a function of two image batches, or None when its backbone weights are not
    already in torch's hub cache: torchmetrics would otherwise try to download them."""
    try:
        import torchvision.models as tvm
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError:
        return None
    weights = {"alex": tvm.AlexNet_Weights, "vgg": tvm.VGG16_Weights, "squeeze": tvm.SqueezeNet1_1_Weights}[net]
    if not _torchvision_weights_cached(weights.IMAGENET1K_V1.url):
        return None
    try:
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="none").to(device)
    except Exception:  # noqa: BLE001 - any failure to load means the metric is unavailable, not a crash
        return None
    metric.eval()

    @torch.no_grad()
    def score(pred: Tensor, target: Tensor) -> Tensor:
        return metric(pred.float().clamp(0, 1).to(device), target.float().clamp(0, 1).to(device)).reshape(-1)

    return score


def load_clip_similarity(model_id: str, device: torch.device | str = "cpu") -> Optional[ImageMetric]:
    """Cosine similarity of CLIP image embeddings (higher is better) for a local folder or a hub id (downloaded into
    the project's cache on first use), or None when the weights cannot be had (the metric is then left out)."""
    try:
        from transformers import CLIPImageProcessor, CLIPModel
    except ImportError:
        return None
    try:
        folder = resolve_hub_weights(model_id, "CLIP metric model", "--clip-model", ("config.json",))
        model = CLIPModel.from_pretrained(folder).to(device).eval()
        processor = CLIPImageProcessor.from_pretrained(folder)
    except (Exception, ModelUnavailableError):  # noqa: BLE001 - missing or unreadable weights: no metric
        return None
    size = processor.crop_size["height"] if isinstance(processor.crop_size, dict) else processor.crop_size
    mean = torch.tensor(processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def score(pred: Tensor, target: Tensor) -> Tensor:
        def embed(images: Tensor) -> Tensor:
            images = F.interpolate(images.float().to(device), size=(size, size), mode="bicubic", align_corners=False)
            features = model.get_image_features(pixel_values=(images.clamp(0, 1) - mean) / std)
            if not isinstance(features, Tensor):  # newer transformers may return a model output
                features = features.pooler_output
            return F.normalize(features, dim=-1)

        return (embed(pred) * embed(target)).sum(dim=-1)

    return score


def _nearest_distances(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(target).query(source, k=1)
    return distances


def _as_points(points) -> np.ndarray:
    array = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    array = array.reshape(-1, 3).astype(np.float64)
    if array.shape[0] == 0:
        raise ValueError("empty point set")
    return array


def chamfer_distance(pred, target) -> float:
    """Symmetric Chamfer distance (world units, not squared): the mean over `pred` of the distance to the nearest
    `target` point and the same the other way, averaged: (mean d(p, T) + mean d(t, P)) / 2."""
    pred, target = _as_points(pred), _as_points(target)
    return float(0.5 * (_nearest_distances(pred, target).mean() + _nearest_distances(target, pred).mean()))


def f_score(pred, target, threshold: float) -> Dict[str, float]:
    """F-score at a distance `threshold` (Tatarchenko et al. 2019): precision is the fraction of `pred` points
    closer than the threshold to `target`, recall the fraction of `target` points closer than it to `pred`, and
    the F-score their harmonic mean (0 when both are 0)."""
    pred, target = _as_points(pred), _as_points(target)
    precision = float((_nearest_distances(pred, target) < threshold).mean())
    recall = float((_nearest_distances(target, pred) < threshold).mean())
    total = precision + recall
    return {"f_score": 2.0 * precision * recall / total if total > 0 else 0.0, "precision": precision, "recall": recall}
