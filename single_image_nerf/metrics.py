"""Image and geometry metrics for evaluation: PSNR, SSIM (torchmetrics), optional LPIPS and CLIP similarity, Chamfer,
F-score.

Images are `Float[Tensor, "B 3 H W"]` in [0, 1]; image metrics return one value per image (B,). The optional
learned metrics return None when their weights cannot be had (LPIPS: not already in torch's hub cache; CLIP: not
cached and not downloadable), which the evaluation reports as "n/a".
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from single_image_nerf.pretrained import ModelUnavailableError, resolve_hub_weights

ImageMetric = Callable[[Tensor, Tensor], Tensor]


def psnr(pred: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(range^2 / MSE); +inf for identical images."""
    return peak_signal_noise_ratio(pred.float(), target.float(), data_range=data_range, reduction="none",
                                   dim=(1, 2, 3))


def ssim_window(height: int, width: int, sigma: float = 1.5) -> Tuple[int, float]:
    """The Gaussian window SSIM uses on an image of this size, as (taps, sigma). torchmetrics sizes its window
    from sigma, 2 int(3.5 sigma + 0.5) + 1 taps (11 at sigma 1.5). An image smaller than that gets the largest odd
    window that fits its smaller side, with the widest sigma torchmetrics gives that many taps (just under
    (radius + 0.5) / 3.5), the nearest it comes to the sigma asked for."""
    taps = 2 * int(3.5 * sigma + 0.5) + 1
    if taps <= min(height, width):
        return taps, sigma
    taps = min(height, width)
    taps -= (taps + 1) % 2
    return taps, ((taps - 1) / 2 + 0.5) / 3.5 * (1.0 - 1e-6)


def ssim(
    pred: Float[Tensor, "B C H W"],
    target: Float[Tensor, "B C H W"],
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), torchmetrics' Gaussian-weighted local statistics
    averaged over the valid region (pixels whose window lies inside the image, as Wang et al.'s code, scikit-image
    and pytorch_msssim do; recent torchmetrics' own mean also counts the border, over a reflected copy) and channels.
    The window is `ssim_window`'s: 11 taps at sigma 1.5, smaller for images smaller than that. Computed in double
    precision: a flat region's variance is the difference of two nearly equal local means, which single precision
    gets wrong by about 1e-7 against C2 = 9e-4."""
    pred, target = pred.double(), target.double()
    height, width = pred.shape[-2:]
    taps, sigma = ssim_window(height, width, sigma)
    _, similarity = structural_similarity_index_measure(
        pred, target, gaussian_kernel=True, sigma=sigma, data_range=data_range, k1=k1, k2=k2, reduction="none",
        return_full_image=True)
    radius = (taps - 1) // 2
    return similarity[..., radius:height - radius, radius:width - radius].flatten(1).mean(dim=1).float()


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
