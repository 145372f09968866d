"""The evaluation metrics against values computed by hand on toy inputs."""

import math

import numpy as np
import pytest
import torch

from single_image_nerf import metrics


def test_psnr_by_hand():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, :, :2] = 0.5  # half the pixels off by 0.5: MSE 0.125 -> 10 log10(8) dB
    values = metrics.psnr(pred, target)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(20.0, abs=1e-4)
    assert values[1].item() == pytest.approx(10.0 * math.log10(8.0), abs=1e-4)
    assert metrics.psnr(target, target).isinf().all()


def test_ssim_identical_and_constant_images():
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(image, image).item() == pytest.approx(1.0, abs=1e-5)
    # Two constant images: no variance, so SSIM is the luminance term (2 a b + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = metrics.ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    y = (x + 0.2 * torch.randn(2, 3, 32, 32, generator=generator)).clamp(0, 1)
    expected = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False)
    assert torch.allclose(metrics.ssim(x, y), expected, atol=1e-4)
    assert metrics.ssim(x, y).lt(metrics.ssim(x, x)).all()


def test_chamfer_and_f_score_by_hand():
    a = np.array([[0.0, 0.0, 0.0]])
    b = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # a -> b: 1 ; b -> a: 1 and 2 (mean 1.5) ; symmetric mean (1 + 1.5) / 2.
    assert metrics.chamfer_distance(a, b) == pytest.approx(1.25)
    assert metrics.chamfer_distance(torch.tensor(b), torch.tensor(b)) == 0.0
    scores = metrics.f_score(a, b, threshold=1.5)
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f_score"] == pytest.approx(2 * 0.5 / 1.5)
    assert metrics.f_score(a, b, threshold=0.5)["f_score"] == 0.0


def test_learned_metrics_never_raise_without_weights():
    lpips = metrics.load_lpips()
    if lpips is not None:  # weights happen to be cached here: the score must then behave
        x = torch.rand(1, 3, 64, 64)
        assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-4)
    assert metrics.load_clip_similarity("/nonexistent/clip-model") is None
