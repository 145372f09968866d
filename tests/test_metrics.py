"""The evaluation metrics against values computed by hand on toy inputs, and torchmetrics' PSNR and SSIM against
the formulas they replaced, kept here as the reference."""

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import pytorch_msssim  # a requirement of nerfstudio's
import torch
import torch.nn.functional as F

from single_image_nerf import metrics
from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.known_objects import ReferenceView, composite, get_known_object, reference_cameras, \
    render_known_object

PHOTO = Path(__file__).resolve().parents[1] / "demo" / "coffee.jpg"


def reference_psnr(pred, target, data_range=1.0):
    """PSNR as metrics.py computed it by hand: 10 log10(range^2 / MSE) per image."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def reference_ssim(pred, target, window_size=11, sigma=1.5, data_range=1.0, k1=0.01, k2=0.03):
    """SSIM as metrics.py computed it by hand: a separable Gaussian window of `window_size` taps (shrunk to the
    largest odd size that fits a smaller image) and `sigma`, local statistics over the valid region, the map
    averaged over pixels and channels."""
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    window_size = min(window_size, pred.shape[-1], pred.shape[-2])
    window_size -= (window_size + 1) % 2
    coords = torch.arange(window_size, dtype=torch.float32) - (window_size - 1) / 2.0
    window = torch.exp(-(coords**2) / (2.0 * sigma**2))
    window = window / window.sum()
    horizontal = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    var_x, var_y = blur(pred * pred) - mu_x**2, blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * (2.0 * cov + c2) / (var_x + var_y + c2)).flatten(1).mean(dim=1)


def photo_and_degraded(height, width):
    """The demo photo at `height` x `width` (B=1), and four degraded copies of it (B=4): blurred, noisy, shifted
    by two pixels, darkened."""
    photo = torch.from_numpy(iio.imread(PHOTO)).float().div(255.0).permute(2, 0, 1)[None]
    photo = F.interpolate(photo, size=(height, width), mode="area")
    noise = torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))
    degraded = torch.cat([
        F.avg_pool2d(F.pad(photo, (1, 1, 1, 1), mode="replicate"), 3, stride=1),
        (photo + 0.05 * noise).clamp(0, 1),
        torch.roll(photo, 2, dims=-1),
        photo * 0.8,
    ])
    return photo, degraded


def known_object_renders(size=64):
    """The box over white from its reference camera, and from 20 degrees round and 10 up."""
    box = get_known_object("box")
    other = orbit_cameras(torch.tensor([20.0]), torch.tensor([10.0]), torch.tensor([2.5]), torch.tensor([40.0]),
                          size, size, reference_azimuth=0.0)
    views = [render_known_object(box, cameras)["rgba"] for cameras in (reference_cameras(ReferenceView(size=size)),
                                                                         other)]
    return [composite(rgba, (1.0, 1.0, 1.0)).permute(0, 3, 1, 2) for rgba in views]


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
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    y = (x + 0.2 * torch.randn(2, 3, 32, 32, generator=generator)).clamp(0, 1)
    expected = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False)
    assert torch.allclose(metrics.ssim(x, y), expected, atol=1e-4)
    assert metrics.ssim(x, y).lt(metrics.ssim(x, x)).all()


def test_torchmetrics_gives_the_hand_written_figures():
    """PSNR and SSIM through torchmetrics give the figures of the formulas they replaced on a real photo against
    degraded copies (not square) and on renders of a known object from two cameras, with SSIM spread from about
    0.5 to 0.96 and PSNR from 17 to 29 dB."""
    photo, degraded = photo_and_degraded(96, 128)
    front, turned = known_object_renders()
    pairs = [(degraded, photo.expand_as(degraded)), (turned, front), (front, turned)]
    for pred, target in pairs:
        psnr, ssim = metrics.psnr(pred, target), metrics.ssim(pred, target)
        assert psnr.shape == ssim.shape == (pred.shape[0],)
        assert torch.allclose(psnr, reference_psnr(pred, target), rtol=0, atol=1e-4)
        assert torch.allclose(ssim, reference_ssim(pred, target), rtol=0, atol=1e-5)
    ssim = metrics.ssim(degraded, photo.expand_as(degraded))
    assert ssim.min() < 0.6 and ssim.max() > 0.95  # the comparison covers poor and good matches alike


@pytest.mark.parametrize("height, width", [(1, 1), (2, 5), (4, 4), (5, 9), (8, 8), (10, 12)])
def test_ssim_of_images_smaller_than_the_window(height, width):
    """An image smaller than the 11-tap window gets the largest odd window that fits its smaller side, with the
    widest sigma torchmetrics gives that many taps; the figure is the reference formula's with that window."""
    taps, sigma = metrics.ssim_window(height, width)
    assert taps % 2 == 1 and taps <= min(height, width) < taps + 2
    assert 2 * int(3.5 * sigma + 0.5) + 1 == taps  # torchmetrics' own window for that sigma
    photo, degraded = photo_and_degraded(height, width)
    target = photo.expand_as(degraded)
    value = metrics.ssim(degraded, target)
    assert value.shape == (4,) and value.isfinite().all()
    assert torch.allclose(value, reference_ssim(degraded, target, taps, sigma), rtol=0, atol=1e-5)
    assert torch.allclose(metrics.ssim(target, target), torch.ones(4), atol=1e-5)
    a, b, c1 = 0.2, 0.6, 0.01**2
    constant = metrics.ssim(torch.full((1, 3, height, width), a), torch.full((1, 3, height, width), b))
    assert constant.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-5)


def test_ssim_window_at_full_size():
    assert metrics.ssim_window(11, 11) == (11, 1.5)
    assert metrics.ssim_window(512, 384) == (11, 1.5)
    assert metrics.ssim_window(64, 64, sigma=3.0) == (23, 3.0)


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
