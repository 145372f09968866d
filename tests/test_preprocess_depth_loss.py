"""The foreground depth loss: 1 - Pearson correlation, invariant to scale and shift, falling as depth agrees."""

from __future__ import annotations

import pytest
import torch

from single_image_nerf.models.depth_loss import pearson_depth_loss


def _depths(n: int = 256, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(n, generator=generator) * 3.0 + 1.0
    noise = torch.randn(n, generator=generator)
    return target, noise


def test_zero_for_agreeing_depth_and_invariant_to_scale_and_shift():
    target, _ = _depths()
    assert pearson_depth_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    for scale, shift in ((2.5, 0.0), (1e-3, 7.0), (1e4, -3.0)):
        assert pearson_depth_loss(target * scale + shift, target).item() == pytest.approx(0.0, abs=1e-5)
    rendered = target + 0.3 * _depths(seed=1)[1]
    base = pearson_depth_loss(rendered, target).item()
    for scale, shift in ((3.0, 1.0), (1e-3, -2.0), (50.0, 100.0)):
        assert pearson_depth_loss(rendered * scale + shift, target).item() == pytest.approx(base, abs=1e-5)
        assert pearson_depth_loss(rendered, target * scale + shift).item() == pytest.approx(base, abs=1e-5)


def test_falls_as_depth_agrees():
    target, noise = _depths()
    losses = [pearson_depth_loss(target + amount * noise, target).item() for amount in (3.0, 1.0, 0.3, 0.1, 0.0)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert pearson_depth_loss(-target, target).item() == pytest.approx(2.0, abs=1e-5)


def test_disparity_target_is_negated():
    depth, _ = _depths()
    disparity = 1.0 / depth
    assert pearson_depth_loss(depth, disparity, target_is_disparity=True).item() < 0.1
    assert pearson_depth_loss(depth, disparity).item() > 1.9


def test_only_masked_pixels_count():
    target, noise = _depths()
    rendered = target.clone()
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[:128] = True
    rendered[128:] = noise[128:] * 100.0  # garbage outside the mask
    assert pearson_depth_loss(rendered, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert pearson_depth_loss(rendered, target).item() > 0.5


def test_constant_and_tiny_inputs_give_no_nan():
    target, _ = _depths()
    for rendered in (torch.full_like(target, 2.0), torch.zeros_like(target)):
        rendered.requires_grad_(True)
        loss = pearson_depth_loss(rendered, target)
        loss.backward()
        assert loss.item() == pytest.approx(1.0) and torch.isfinite(rendered.grad).all()
    assert pearson_depth_loss(target, torch.ones_like(target)).item() == pytest.approx(1.0)
    empty = torch.zeros_like(target, dtype=torch.bool)
    rendered = target.clone().requires_grad_(True)
    loss = pearson_depth_loss(rendered, target, empty)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(rendered.grad).all()


def test_gradient_pulls_towards_the_target():
    target, noise = _depths()
    rendered = (target + noise).clone().requires_grad_(True)
    optimiser = torch.optim.SGD([rendered], lr=20.0)
    first = None
    for _ in range(30):
        optimiser.zero_grad()
        loss = pearson_depth_loss(rendered, target)
        first = loss.item() if first is None else first
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5 * first


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        pearson_depth_loss(torch.zeros(4, 1), torch.zeros(4))
