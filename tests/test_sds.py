"""The score-distillation formulas, the timestep schedule and the view-dependent prompts, as pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from single_image_nerf.guidance import sds
from single_image_nerf.guidance.prompts import VIEWS, PromptMissingError, resolve_prompt, view_indices


def test_anneal_progress_kinds():
    assert sds.anneal_progress(500, "none", 0, 1000) == 0.0
    assert sds.anneal_progress(500, "linear", 0, 1000) == pytest.approx(0.5)
    assert sds.anneal_progress(250, "sqrt", 0, 1000) == pytest.approx(0.5)
    assert sds.anneal_progress(999, "step", 0, 1000) == 0.0
    assert sds.anneal_progress(1000, "step", 0, 1000) == 1.0
    assert sds.anneal_progress(50, "linear", 100, 1000) == 0.0
    assert sds.anneal_progress(5000, "linear", 100, 1000) == 1.0


def test_timestep_range_anneals_from_start_to_end():
    start, end = (0.02, 0.98), (0.02, 0.5)
    assert sds.timestep_range(0, start, end, "linear", 0, 1000) == pytest.approx(start)
    assert sds.timestep_range(500, start, end, "linear", 0, 1000) == pytest.approx((0.02, 0.74))
    assert sds.timestep_range(10_000, start, end, "linear", 0, 1000) == pytest.approx(end)
    with pytest.raises(ValueError):
        sds.timestep_range(0, (0.6, 0.5), end, "none", 0, 1)


def test_sampled_timesteps_stay_in_range_and_anneal():
    generator = torch.Generator().manual_seed(0)
    early = sds.sample_timesteps(4000, 0.02, 0.98, 1000, generator)
    assert early.min() >= 20 and early.max() <= 980
    assert early.min() < 40 and early.max() > 960  # the whole range is used
    t_min, t_max = sds.timestep_range(5000, (0.02, 0.98), (0.02, 0.5), "linear", 0, 5000)
    late = sds.sample_timesteps(4000, t_min, t_max, 1000, generator)
    assert late.min() >= 20 and late.max() <= 500
    assert sds.sample_timesteps(10, 1.0, 1.0, 1000, generator).max() == 999  # clamped to the last timestep


def test_classifier_free_guidance_is_uncond_plus_scaled_difference():
    uncond, cond = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(sds.classifier_free_guidance(uncond, cond, 7.5), uncond + 7.5 * (cond - uncond))
    torch.testing.assert_close(sds.classifier_free_guidance(uncond, cond, 1.0), cond)
    torch.testing.assert_close(sds.classifier_free_guidance(uncond, cond, 0.0), uncond)
    # A fractional scale is not truncated (nerfstudio's generfacto casts it with int()).
    assert not torch.allclose(sds.classifier_free_guidance(uncond, cond, 7.5),
                              sds.classifier_free_guidance(uncond, cond, 7.0))


def test_weightings():
    abar = torch.tensor([0.25, 0.81])
    torch.testing.assert_close(sds.sds_weight(abar, "sds"), 1 - abar)
    torch.testing.assert_close(sds.sds_weight(abar, "sqrt"), (1 - abar).sqrt())
    torch.testing.assert_close(sds.sds_weight(abar, "uniform"), torch.ones(2))
    torch.testing.assert_close(sds.sds_weight(abar, "fantasia3d"), abar.sqrt() * (1 - abar))
    with pytest.raises(ValueError):
        sds.sds_weight(abar, "nope")


def test_noise_prediction_conversions_invert_the_forward_process():
    z, eps = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    abar = torch.tensor([0.9, 0.3])
    noisy = sds.add_noise(z, eps, abar)
    a = abar.reshape(-1, 1, 1, 1)
    velocity = a.sqrt() * eps - (1 - a).sqrt() * z
    torch.testing.assert_close(sds.to_epsilon(velocity, noisy, abar, "v_prediction"), eps)
    torch.testing.assert_close(sds.to_epsilon(z, noisy, abar, "sample"), eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sds.to_epsilon(eps, noisy, abar, "epsilon"), eps)
    torch.testing.assert_close(sds.predicted_original(noisy, eps, abar), z, rtol=1e-4, atol=1e-4)


def test_sds_loss_gradient_is_the_score_over_the_batch():
    latents = torch.randn(3, 4, 6, 6, requires_grad=True)
    grad = torch.randn(3, 4, 6, 6)
    loss = sds.sds_loss(latents, grad)
    loss.backward()
    torch.testing.assert_close(latents.grad, grad / 3)
    assert loss.item() == pytest.approx(0.5 * grad.pow(2).sum().item() / 3, rel=1e-5)


def test_sds_gradient_weights_and_clips():
    eps_hat, noise = torch.full((2, 4, 2, 2), 3.0), torch.zeros(2, 4, 2, 2)
    weight = torch.tensor([0.5, 1.0])
    grad = sds.sds_gradient(eps_hat, noise, weight)
    assert grad[0].unique().item() == 1.5 and grad[1].unique().item() == 3.0
    assert sds.sds_gradient(eps_hat, noise, weight, clip=2.0).max().item() == 2.0
    assert sds.is_finite(grad) and not sds.is_finite(grad * math.inf)


@pytest.mark.parametrize(
    "azimuth, elevation, view",
    [(0.0, 0.0, "front"), (44.0, 20.0, "front"), (-44.0, 0.0, "front"), (60.0, 0.0, "side"), (-90.0, 30.0, "side"),
     (180.0, 0.0, "back"), (-150.0, 10.0, "back"), (140.0, 0.0, "back"), (0.0, 75.0, "overhead"),
     (180.0, 61.0, "overhead"), (400.0, 0.0, "front")],
)
def test_view_index_for_known_azimuth_and_elevation(azimuth, elevation, view):
    index = view_indices(torch.tensor([azimuth]), torch.tensor([elevation]))
    assert VIEWS[int(index)] == view


def test_prompt_comes_from_user_then_token_then_caption_then_error():
    assert resolve_prompt("a red teapot", "a caption", "<obj>", "a photo of {token}") == "a red teapot"
    assert resolve_prompt(None, "a caption", "<obj>", "a photo of {token}") == "a photo of <obj>"
    assert resolve_prompt(None, "a teapot", "<obj>", "a photo of {token}, {caption}") == "a photo of <obj>, a teapot"
    assert resolve_prompt(None, " a teapot\n", None, "a photo of {token}") == "a teapot"
    with pytest.raises(PromptMissingError, match="--pipeline.guidance.prompt"):
        resolve_prompt(None, None, None, "a photo of {token}")
    with pytest.raises(PromptMissingError):
        resolve_prompt("", "   ", None, "a photo of {token}")
