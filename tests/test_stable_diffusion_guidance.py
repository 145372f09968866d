"""The Stable Diffusion guidance with a tiny random pipeline saved to disk and loaded back with the hub offline."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.loading import GuidanceUnavailableError
from single_image_nerf.guidance.prompts import VIEWS, PromptMissingError
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from tiny_diffusion import tiny_stable_diffusion_folder

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("offline_hub")


def cameras(azimuths, elevations, reference_azimuth=0.0, size=16):
    count = len(azimuths)
    return orbit_cameras(torch.tensor(azimuths, dtype=torch.float32), torch.tensor(elevations, dtype=torch.float32),
                         torch.full((count,), 2.5), torch.full((count,), 40.0), size, size,
                         reference_azimuth=reference_azimuth)


def guidance(prediction_type="epsilon", context=None, **options):
    options.setdefault("prompt", "a teapot")
    config = StableDiffusionGuidanceConfig(model_path=str(tiny_stable_diffusion_folder(prediction_type)), **options)
    return config.setup(context=context or GuidanceContext(device=CPU))


def by_hand_embeddings(folder, texts):
    """Prompt embeddings computed from the saved tokenizer and text encoder, independently of the guidance."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


def test_importing_the_config_loads_neither_diffusers_nor_transformers():
    code = ("import sys, single_image_nerf.guidance.stable_diffusion, single_image_nerf.guidance.registry; "
            "heavy = [m for m in ('diffusers', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_latent_gradient_is_weighted_score_computed_by_hand(prediction_type):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    folder = tiny_stable_diffusion_folder(prediction_type)
    guide = guidance(prediction_type, guidance_scale=7.5, weighting="sds")
    views = cameras([10.0, 200.0], [0.0, 5.0])  # front and back
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.tensor([300, 700])
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))

    trace = guide.score(latents, guide.view_embeddings(views), step=0, t=t, noise=noise)
    sds.sds_loss(latents, trace.grad).backward()

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    abar = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod[t].reshape(-1, 1, 1, 1)
    cond = by_hand_embeddings(folder, ["a teapot, front view", "a teapot, back view"])
    uncond = by_hand_embeddings(folder, [""]).expand(2, -1, -1)
    with torch.no_grad():
        noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
        out_uncond = unet(noisy, t, encoder_hidden_states=uncond).sample
        out_cond = unet(noisy, t, encoder_hidden_states=cond).sample
    if prediction_type == "v_prediction":
        out_uncond = abar.sqrt() * out_uncond + (1 - abar).sqrt() * noisy
        out_cond = abar.sqrt() * out_cond + (1 - abar).sqrt() * noisy
    eps_hat = out_uncond + 7.5 * (out_cond - out_uncond)
    expected = (1 - abar) * (eps_hat - noise)
    torch.testing.assert_close(latents.grad * 2, expected, rtol=1e-4, atol=1e-5)  # the loss averages over views


def test_loss_reaches_the_renders_through_the_latent_map_only():
    guide = guidance(encoder="latent", weight=2.0)
    images = torch.rand(1, 3, 8, 8, requires_grad=True)  # already at latent size: no resize
    losses = guide.loss(images, cameras([0.0], [0.0]), step=0)
    assert set(losses) == {"sds_loss"} and torch.isfinite(losses["sds_loss"])
    losses["sds_loss"].backward()
    expected = 2.0 * torch.einsum("oc,bohw->bchw", guide.latent_map.weight, guide.last_trace.grad)
    torch.testing.assert_close(images.grad, expected, rtol=1e-4, atol=1e-6)
    frozen = list(guide.unet.parameters()) + list(guide.vae.parameters())
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.dtype == torch.float32 for p in frozen)


def test_vae_path_gives_finite_nonzero_gradient_and_no_weight_gradients():
    guide = guidance(encoder="vae")
    assert guide.encoder == "vae" and guide.resolution == 16 and guide.latent_size == 8
    images = torch.rand(2, 3, 24, 24, requires_grad=True)
    losses = guide.loss(images, cameras([0.0, 90.0], [0.0, 0.0], size=24), step=3)
    losses["sds_loss"].backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in guide.vae.parameters())


def test_auto_encoder_is_latent_on_cpu_and_resolution_is_configurable():
    guide = guidance(resolution=32)
    assert guide.encoder == "latent" and guide.latent_size == 16
    with pytest.raises(SystemExit):
        guidance(resolution=31)  # not a multiple of the VAE factor (2 for the tiny model)


@pytest.mark.parametrize("resolution", [31, -16])
def test_bad_resolution_fails_with_one_line_before_any_weight_is_loaded(monkeypatch, resolution):
    from single_image_nerf.guidance import loading

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the resolution was checked")

    monkeypatch.setattr(loading, "load_stable_diffusion", no_loading)
    with pytest.raises(UserInputError) as error:
        guidance(resolution=resolution)
    message = str(error.value)
    assert "pipeline.guidance:stable-diffusion --pipeline.guidance.resolution" in message and "\n" not in message


def test_missing_token_file_fails_with_one_line_naming_the_subcommand(tmp_path):
    with pytest.raises(UserInputError, match="pipeline.guidance:stable-diffusion --pipeline.guidance.token-path"):
        guidance(token_path=tmp_path / "token.bin")


def test_view_prompts_for_cameras_at_known_azimuth_and_elevation():
    guide = guidance(negative_prompt="blurry")
    assert guide.prompts == [f"a teapot, {view} view" for view in VIEWS]
    # The reference camera sits at azimuth 30: azimuths are read relative to it.
    views = cameras([30.0, 110.0, 220.0, -60.0, 30.0], [0.0, 0.0, 10.0, 0.0, 80.0], reference_azimuth=30.0)
    names = [VIEWS[i] for i in guide.view_indices(views)]
    assert names == ["front", "side", "back", "side", "overhead"]
    embeddings = guide.view_embeddings(views)
    folder = tiny_stable_diffusion_folder()
    expected = by_hand_embeddings(folder, [f"a teapot, {name} view" for name in names])
    torch.testing.assert_close(embeddings, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guide.uncond_embeddings, by_hand_embeddings(folder, ["blurry"]), rtol=1e-5, atol=1e-6)


def test_view_prompts_can_be_turned_off():
    guide = guidance(view_dependent_prompts=False)
    assert guide.prompts == ["a teapot"]
    assert guide.view_embeddings(cameras([0.0, 180.0], [0.0, 0.0])).shape[0] == 2


def test_prompt_falls_back_to_caption_then_fails_clearly():
    guide = guidance(prompt=None, context=GuidanceContext(device=CPU, caption="a ceramic teapot"))
    assert guide.prompt == "a ceramic teapot"
    with pytest.raises(PromptMissingError, match="--pipeline.guidance.prompt"):
        guidance(prompt=None)


def test_schedule_inside_the_guidance_anneals():
    guide = guidance(anneal="linear", anneal_end=1.0, context=GuidanceContext(device=CPU, run_steps=100))
    assert guide.status(0)["t_max"] == pytest.approx(0.98) and guide.status(100)["t_max"] == pytest.approx(0.5)
    latents = torch.zeros(64, 4, 8, 8)
    cond = guide.cond_embeddings[:1].expand(64, -1, -1)
    late = guide.score(latents, cond, step=100).t
    assert late.min() >= 20 and late.max() <= 500


def test_gradient_clipping_and_non_finite_guard():
    guide = guidance(grad_clip=0.01)
    views = cameras([0.0], [0.0])
    guide.loss(torch.rand(1, 3, 8, 8), views, step=0)
    assert guide.last_trace.grad.abs().max() <= 0.01
    images = torch.full((1, 3, 8, 8), float("nan"), requires_grad=True)
    losses = guide.loss(images, views, step=1)  # counted on the device, reported when read
    assert losses["sds_loss"].item() == 0.0 and guide.status(1)["skipped_steps"] == 1.0
    losses["sds_loss"].backward()
    assert torch.equal(images.grad, torch.zeros_like(images))  # zero, not NaN: the reference losses still step
    with pytest.warns(RuntimeWarning, match="non-finite"):
        assert guide.skipped_steps == 1


def test_missing_weights_fail_at_once_with_one_line_naming_model_and_option(tmp_path):
    start = time.perf_counter()
    config = StableDiffusionGuidanceConfig(model_path="no-such-org/no-such-model", prompt="a teapot")
    with pytest.raises(GuidanceUnavailableError) as error:
        config.setup(context=GuidanceContext(device=CPU))
    message = str(error.value)
    assert "no-such-org/no-such-model" in message and "--pipeline.guidance.model-path" in message
    assert "\n" not in message and isinstance(error.value, SystemExit) and error.value.code != 0
    assert time.perf_counter() - start < 10
    config.model_path = str(tmp_path / "missing")
    with pytest.raises(GuidanceUnavailableError, match="is not an existing folder"):
        config.setup(context=GuidanceContext(device=CPU))
    (tmp_path / "empty").mkdir()
    config.model_path = str(tmp_path / "empty")
    with pytest.raises(GuidanceUnavailableError, match="lacks"):
        config.setup(context=GuidanceContext(device=CPU))


def test_guidance_is_selectable_from_the_registry():
    from typing import get_args

    from single_image_nerf.guidance.registry import AnyGuidanceConfig

    configs = [get_args(option)[0] for option in get_args(AnyGuidanceConfig)]
    assert StableDiffusionGuidanceConfig in configs
