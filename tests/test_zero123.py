"""The Zero123 guidance and the Magic123 joint prior with tiny random folders saved in the public diffusers layout and
loaded back offline: the conditioning conventions as pure functions (with geometry for the camera), the score
against a by-hand UNet evaluation, loading through the hub cache as users get it, one-line errors, the reference
elevation from the data, and short coarse trainings through nerfstudio's Trainer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image

from single_image_nerf import pretrained
from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig
from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance import recipes
from single_image_nerf.guidance.magic123 import Magic123GuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.zero123 import (
    Zero123GuidanceConfig, camera_vector, detect_camera_embedding, guidance_batch, reference_latent,
    relative_camera_vector, white_composite,
)
from single_image_nerf.pretrained import ModelUnavailableError
from tiny_diffusion import tiny_stable_diffusion_folder
from tiny_zero123 import build_tiny_zero123, tiny_zero123_folder

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("offline_hub")


def cams(azimuths, elevations, radii=None, reference_azimuth=0.0, size=16):
    count = len(azimuths)
    radii = radii or [2.5] * count
    return orbit_cameras(torch.tensor(azimuths, dtype=torch.float32), torch.tensor(elevations, dtype=torch.float32),
                         torch.tensor(radii, dtype=torch.float32), torch.full((count,), 40.0), size, size,
                         reference_azimuth=reference_azimuth)


def reference_rgba(size=32):
    """An opaque red square on a transparent background, with a half-transparent rim."""
    rgba = torch.zeros(size, size, 4)
    rgba[8:24, 8:24] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    rgba[7, 8:24] = torch.tensor([0.0, 0.0, 1.0, 0.5])
    return rgba


def context(azimuth=0.0, elevation=10.0, radius=2.5):
    return GuidanceContext(device=CPU, reference_image=reference_rgba(),
                           reference_cameras=cams([azimuth], [elevation], [radius], reference_azimuth=azimuth))


def zero123(ctx=None, folder=None, **options):
    config = Zero123GuidanceConfig(model_path=str(folder or tiny_zero123_folder()), **options)
    return config.setup(context=ctx or context())


# ------------------------------------------------------------------------------------------------ conventions
def test_importing_the_configs_loads_neither_diffusers_nor_transformers():
    code = ("import sys, single_image_nerf.guidance.zero123, single_image_nerf.guidance.magic123, "
            "single_image_nerf.guidance.registry; "
            "heavy = [m for m in ('diffusers', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_camera_vector_is_delta_polar_sin_cos_delta_azimuth_and_delta_radius():
    vector = camera_vector(torch.tensor([40.0, 10.0]), torch.tensor([120.0, -170.0]), torch.tensor([3.0, 2.5]),
                           torch.tensor(10.0), torch.tensor(30.0), torch.tensor(2.5))
    expected = torch.tensor([[math.radians(-30.0), 1.0, 0.0, 0.5],  # 30° higher: the polar angle shrinks
                             [0.0, math.sin(math.radians(-200.0)), math.cos(math.radians(-200.0)), 0.0]])
    assert torch.allclose(vector, expected, atol=1e-6)
    # Stable Zero123: the last entry is the reference's absolute polar angle (90° - 10°), whatever the view's radius.
    stable = camera_vector(torch.tensor([40.0, 10.0]), torch.tensor([120.0, -170.0]), torch.tensor([3.0, 2.5]),
                           torch.tensor(10.0), torch.tensor(30.0), torch.tensor(2.5), absolute_polar=True)
    assert torch.allclose(stable[:, :3], expected[:, :3], atol=1e-6)
    assert torch.allclose(stable[:, 3], torch.full((2,), math.radians(80.0)))


def test_azimuth_and_polar_signs_follow_the_geometry():
    """The camera at reference azimuth + 90° lies on the reference camera's right: its Δazimuth is +90°. A camera
    higher up lies above the reference camera's view axis: its Δpolar is negative."""
    reference = cams([30.0], [15.0], reference_azimuth=30.0)
    novel = cams([120.0, 30.0, -60.0], [15.0, 45.0, 15.0], reference_azimuth=30.0)
    c2w = reference.camera_to_worlds[0]
    right, up, backward, origin = c2w[:, 0], c2w[:, 1], c2w[:, 2], c2w[:, 3]
    offsets = novel.camera_to_worlds[:, :, 3] - origin
    # Positions seen from the reference camera (OpenGL: +x right, +y up in the image).
    x, y = offsets @ right, offsets @ up
    vector = relative_camera_vector(novel, reference)
    delta_azimuth = torch.rad2deg(torch.atan2(vector[:, 1], vector[:, 2]))
    assert x[0] > 1.0 and delta_azimuth[0] == pytest.approx(90.0, abs=1e-3)  # on the right: +90°
    assert x[2] < -1.0 and delta_azimuth[2] == pytest.approx(-90.0, abs=1e-3)  # on the left: -90°
    assert y[1] > 0.5 and abs(float(x[1])) < 1e-4 and vector[1, 0] == pytest.approx(math.radians(-30.0), abs=1e-5)
    assert torch.allclose(vector[:, 3], torch.zeros(3), atol=1e-5)  # same radius
    assert (offsets @ backward)[0] < 0  # and the +90° camera is nearer the object than the reference


def test_reference_is_composited_on_white_at_the_prior_size():
    image = white_composite(reference_rgba(32), 256)
    assert image.shape == (1, 3, 256, 256)
    assert torch.allclose(image[0, :, 0, 0], torch.ones(3))  # transparent -> white
    assert torch.allclose(image[0, :, 128, 128], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)  # opaque red kept
    rim = white_composite(reference_rgba(32), 32)[0, :, 7, 16]
    assert torch.allclose(rim, torch.tensor([0.5, 0.5, 1.0]), atol=1e-4)  # half blue over white


def test_reference_latent_is_the_posterior_mode_without_the_scaling_factor():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_zero123_folder(), subfolder="vae").eval()
    image = white_composite(reference_rgba(), 16)
    with torch.no_grad():
        posterior = vae.encode(image * 2.0 - 1.0).latent_dist
    latent = reference_latent(vae, image)
    assert vae.config.scaling_factor != 1.0
    assert torch.allclose(latent, posterior.mode()) and not torch.allclose(latent, posterior.mode() * 0.18215)
    guide = zero123()
    assert torch.allclose(guide.reference_latent, latent, atol=1e-6)  # what the guidance concatenates


def test_clip_embedding_goes_through_the_folders_feature_extractor():
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = tiny_zero123_folder()
    guide = zero123()
    processor = CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
    encoder = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder").eval()
    as_uint8 = Image.fromarray((white_composite(reference_rgba(), 16)[0].permute(1, 2, 0).numpy() * 255).round()
                               .astype(np.uint8))
    with torch.no_grad():
        by_hand = encoder(processor(images=as_uint8, return_tensors="pt").pixel_values).image_embeds
    assert guide.image_embedding.shape == (1, 1, by_hand.shape[-1])
    assert torch.allclose(guide.image_embedding[:, 0], by_hand, atol=2e-2)  # up to the 8-bit rounding of the PIL path


def test_unconditional_branch_is_zeros_and_comes_first():
    noisy, reference, states = torch.randn(3, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.randn(3, 1, 32)
    latents, hidden = guidance_batch(noisy, reference, states)
    assert latents.shape == (6, 8, 8, 8) and hidden.shape == (6, 1, 32)
    assert torch.equal(latents[:3, :4], noisy) and torch.equal(latents[3:, :4], noisy)
    assert torch.equal(latents[:3, 4:], torch.zeros(3, 4, 8, 8)) and torch.equal(hidden[:3], torch.zeros(3, 1, 32))
    assert torch.equal(latents[3:, 4:], reference.expand(3, -1, -1, -1)) and torch.equal(hidden[3:], states)


def test_latent_gradient_is_the_weighted_guided_score_computed_by_hand():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    folder = tiny_zero123_folder()
    guide = zero123(guidance_scale=3.0)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    alphas = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod
    cameras = cams([100.0, 250.0], [20.0, -5.0], [2.5, 2.7])
    latents = torch.randn(2, 4, 8, 8)
    t, noise = torch.tensor([300, 700]), torch.randn(2, 4, 8, 8)
    states = guide.camera_states(cameras)
    trace = guide.score(latents, states, step=0, t=t, noise=noise)
    noisy = alphas[t].sqrt()[:, None, None, None] * latents + (1 - alphas[t]).sqrt()[:, None, None, None] * noise
    reference = guide.reference_latent.expand(2, -1, -1, -1)
    with torch.no_grad():
        cond = unet(torch.cat([noisy, reference], 1), t, encoder_hidden_states=states).sample
        uncond = unet(torch.cat([noisy, torch.zeros_like(reference)], 1), t,
                      encoder_hidden_states=torch.zeros_like(states)).sample
    eps_hat = uncond + 3.0 * (cond - uncond)
    assert torch.allclose(trace.eps_hat, eps_hat, atol=1e-4)
    assert not torch.allclose(trace.eps_hat, cond + 3.0 * (cond - uncond), atol=1e-3)  # not the s+1 variant
    assert torch.allclose(trace.grad, (1 - alphas[t])[:, None, None, None] * (eps_hat - noise), atol=1e-4)
    # The states are the projection of [image embedding, camera numbers].
    projection = guide.projection
    vector = relative_camera_vector(cameras, guide.reference_cameras)
    joined = torch.cat([guide.image_embedding.expand(2, -1, -1), vector[:, None, :]], -1)
    assert torch.allclose(states, projection(joined), atol=1e-6)


@pytest.mark.parametrize("encoder", ["latent", "vae"])
def test_loss_is_finite_reaches_the_renders_and_no_frozen_weight(encoder):
    guide = zero123(encoder=encoder)
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    losses = guide.loss(images, cams([60.0, 200.0], [10.0, 30.0]), step=0)
    assert set(losses) == {"zero123_sds_loss"} and torch.isfinite(losses["zero123_sds_loss"])
    losses["zero123_sds_loss"].backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    for module in (guide.unet, guide.vae, guide.projection):
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    status = guide.status(0)
    assert status["t_max"] == pytest.approx(0.85) and float(status["sds_grad_norm"]) > 0
    assert guide.skipped_steps == 0


def test_defaults_follow_threestudio_and_the_default_id_is_zero123_xl():
    """The recipe values are threestudio's current configs (28d9d80), on our scale (rgb_loss_mult 1000)."""
    config = Zero123GuidanceConfig()
    assert config.model_path == pretrained.ZERO123_ID == pretrained.DEFAULT_HUB_MODELS["Zero123 prior"]
    assert config.weight is None and config.resolution is None  # the recipe's; the model's native 256 px
    recipes.apply(config, recipes.recipe_for(config))
    assert config.guidance_scale == 3.0 and (config.t_range, config.t_range_end) == ((0.4, 0.85), (0.2, 0.5))
    assert config.anneal == "linear" and (config.anneal_start, config.anneal_end) == pytest.approx((0.0, 1 / 3))
    assert config.weight == pytest.approx(0.1 / 500 * 1000)  # zero123.yaml lambda_sds / lambda_rgb, our rgb 1000
    stable = Zero123GuidanceConfig(model_path="ashawkey/stable-zero123-diffusers")
    assert stable.recipe_name() == "stable-zero123"
    recipes.apply(stable, recipes.recipe_for(stable))
    assert (stable.t_range, stable.t_range_end) == ((0.7, 0.98), (0.3, 0.8)) and stable.weight == pytest.approx(0.1)
    magic = Magic123GuidanceConfig()
    recipes.apply(magic, recipes.recipe_for(magic))
    assert (magic.stable_diffusion.weight, magic.zero123.weight) == (0.025, 1.0)  # magic123-coarse-sd.yaml
    assert (magic.stable_diffusion.guidance_scale, magic.zero123.guidance_scale) == (100.0, 5.0)
    assert magic.stable_diffusion.t_range == magic.zero123.t_range_end == (0.2, 0.6)
    assert magic.weight == 1.0  # lambda_rgb 1000 = ours
    explicit = Magic123GuidanceConfig(weight=0.5)
    explicit.zero123.weight = 40.0
    recipes.apply(explicit, recipes.recipe_for(explicit))
    assert (explicit.weight, explicit.zero123.weight, explicit.stable_diffusion.weight) == (0.5, 40.0, 0.025)


def test_stable_zero123_switch_from_the_folder_name_or_the_option(tmp_path):
    snapshots = tmp_path / "hub" / "models--ashawkey--{}" / "snapshots" / ("0" * 40)
    stable, xl = (str(snapshots).format(name) for name in ("stable-zero123-diffusers", "zero123-xl-diffusers"))
    assert detect_camera_embedding("ashawkey/stable-zero123-diffusers", stable) == "stable-zero123"
    assert detect_camera_embedding("ashawkey/zero123-xl-diffusers", xl) == "zero123"
    assert detect_camera_embedding("/models/x", stable) == "stable-zero123"  # found in a hub cache by path
    assert detect_camera_embedding("/models/x", tmp_path / "Stable_Zero123") == "stable-zero123"
    assert detect_camera_embedding("/models/x", tmp_path / "zero123-xl") == "zero123"
    assert zero123().camera_embedding == "zero123"
    stable = zero123(ctx=context(elevation=20.0), camera_embedding="stable-zero123")
    cameras = cams([45.0], [20.0], [3.0])
    vector = relative_camera_vector(cameras, stable.reference_cameras, absolute_polar=True)
    assert vector[0, 3] == pytest.approx(math.radians(70.0), abs=1e-5)
    joined = torch.cat([stable.image_embedding, vector[:, None, :]], -1)
    assert torch.allclose(stable.camera_states(cameras), stable.projection(joined), atol=1e-6)


# ------------------------------------------------------------------------------------------------- loading
def test_loads_by_the_default_hub_id_from_the_cache_as_users_get_it(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from served_models import write_hub_repo

    write_hub_repo(tmp_path / "ours" / "hub", pretrained.ZERO123_ID, tiny_zero123_folder(), commit="3" * 40)
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "ours"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    guide = Zero123GuidanceConfig().setup(context=context())
    assert guide.folder == tmp_path / "ours" / "hub" / "models--ashawkey--zero123-xl-diffusers" / "snapshots" / ("3" * 40)
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    guide.loss(images, cams([90.0], [10.0]), 0)["zero123_sds_loss"].backward()
    assert images.grad.abs().sum() > 0


def test_both_public_projection_layouts_load(tmp_path):
    from safetensors.torch import load_file

    kxic = build_tiny_zero123(tmp_path / "kxic", projection="cc_projection", seed=1)
    assert not (kxic / "clip_camera_projection").exists()
    guide = zero123(folder=kxic)
    saved = load_file(str(kxic / "cc_projection" / "diffusion_pytorch_model.safetensors"))
    assert set(saved) == {"projection.weight", "projection.bias"}
    assert torch.equal(guide.projection.weight, saved["projection.weight"])
    saved = load_file(str(tiny_zero123_folder() / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    assert set(saved) == {"proj.weight", "proj.bias"}
    assert torch.equal(zero123().projection.bias, saved["proj.bias"])


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, SystemExit) and error.value.code != 0
    return message


def test_missing_folder_and_folder_without_projection_fail_with_one_line(tmp_path):
    with pytest.raises(ModelUnavailableError) as error:
        zero123(folder=tmp_path / "missing")
    message = _one_line(error)
    assert "is not an existing folder" in message and "pipeline.guidance:zero123 --pipeline.guidance.model-path" in message
    folder = build_tiny_zero123(tmp_path / "no-projection")
    for path in (folder / "clip_camera_projection").iterdir():
        path.unlink()
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as error:
        zero123(folder=folder)
    message = _one_line(error)
    assert "no camera projection" in message and "clip_camera_projection/" in message and "cc_projection/" in message
    assert time.perf_counter() - start < 5  # refused before the UNet loads
    with pytest.raises(ModelUnavailableError, match="lacks") as error:  # a Stable Diffusion folder is no Zero123
        zero123(folder=tiny_stable_diffusion_folder())
    _one_line(error)


def test_no_network_fails_at_once_with_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from served_models import closed_port

    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as error:
        Zero123GuidanceConfig().setup(context=context())
    message = _one_line(error)
    assert "no network connection" in message and f"'{pretrained.ZERO123_ID}'" in message
    assert "pipeline.guidance:zero123 --pipeline.guidance.model-path PATH" in message
    assert time.perf_counter() - start < 30
    # Inside the joint prior, the error names the joint prior's option.
    with pytest.raises(ModelUnavailableError, match="pipeline.guidance:magic123 --pipeline.guidance.zero123.model-path"):
        Magic123GuidanceConfig().setup(context=context())
    joint = Magic123GuidanceConfig()
    joint.stable_diffusion.prompt = "a teapot"
    joint.zero123.model_path = str(tiny_zero123_folder())
    with pytest.raises(ModelUnavailableError,
                       match="pipeline.guidance:magic123 --pipeline.guidance.stable-diffusion.model-path"):
        joint.setup(context=context())


def test_a_run_without_reference_camera_or_a_bad_resolution_is_refused_with_one_line():
    with pytest.raises(UserInputError, match="needs the reference image") as error:
        Zero123GuidanceConfig(model_path=str(tiny_zero123_folder())).setup(context=GuidanceContext(device=CPU))
    _one_line(error)
    with pytest.raises(UserInputError, match="multiple of 2"):
        zero123(resolution=15)


# ----------------------------------------------------------------------------------------- reference elevation
def _data_folder(tmp_path, meta):
    folder = tmp_path / "data"
    folder.mkdir()
    from tiny_training import write_ball_image

    write_ball_image(folder / "rgba.png", size=32)
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _reference_elevation(outputs) -> float:
    from single_image_nerf.data.camera_sampling import pose_angles

    return float(pose_angles(outputs.cameras.camera_to_worlds)[1][0])


def test_reference_elevation_comes_from_meta_json_with_an_override(tmp_path):
    folder = _data_folder(tmp_path, {"elevation_deg": 20.0})
    parse = lambda **kw: SingleImageDataParserConfig(data=folder, image_size=32, **kw).setup().get_dataparser_outputs()
    outputs = parse()
    assert _reference_elevation(outputs) == pytest.approx(20.0, abs=1e-3)
    assert _reference_elevation(parse(reference_elevation=-5.0)) == pytest.approx(-5.0, abs=1e-3)
    # The guidance sees the same camera: a view at the photo's elevation has Δpolar 0, Stable Zero123's last
    # number is the photo's polar angle 70°.
    vector = relative_camera_vector(cams([90.0], [20.0]), outputs.cameras, absolute_polar=True)
    assert vector[0, 0] == pytest.approx(0.0, abs=1e-5) and vector[0, 3] == pytest.approx(math.radians(70.0), abs=1e-5)
    (folder / "meta.json").write_text(json.dumps({"elevation_deg": 95}))
    with pytest.raises(UserInputError, match=r"elevation_deg\) must be a number of degrees in \[-89, 89\]") as error:
        parse()
    _one_line(error)
    (folder / "meta.json").unlink()
    assert _reference_elevation(parse()) == pytest.approx(0.0, abs=1e-3)


def test_preprocessing_writes_the_elevation_the_dataparser_reads(tmp_path):
    from single_image_nerf.preprocess.errors import PreprocessError
    from single_image_nerf.preprocess.pipeline import PreprocessOptions, preprocess_image
    from tiny_training import write_ball_image

    photo = write_ball_image(tmp_path / "photo.png", size=48)
    options = PreprocessOptions(size=32, depth=False, caption_text="a ball", elevation=25.0, progress=False)
    preprocess_image(photo, tmp_path / "data", options)
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["elevation_deg"] == 25.0
    outputs = SingleImageDataParserConfig(data=tmp_path / "data", image_size=32).setup().get_dataparser_outputs()
    assert _reference_elevation(outputs) == pytest.approx(25.0, abs=1e-3)
    with pytest.raises(PreprocessError, match="elevation 120.0 is outside"):
        preprocess_image(photo, tmp_path / "other", options, elevation=120.0)


# ---------------------------------------------------------------------------------------------------- Magic123
def test_magic123_gives_one_entry_per_prior_each_with_its_own_weight():
    sd_folder = str(tiny_stable_diffusion_folder())
    magic = Magic123GuidanceConfig()
    magic.stable_diffusion.model_path, magic.stable_diffusion.prompt = sd_folder, "a red ball"
    magic.zero123.model_path = str(tiny_zero123_folder())
    guide = magic.setup(context=context())
    parts = recipes.COARSE_RECIPES["magic123"].parts
    alone_zero123 = Zero123GuidanceConfig(model_path=str(tiny_zero123_folder()))
    recipes.apply(alone_zero123, recipes.COARSE_RECIPES["magic123"], parts["zero123"])
    alone_sd = StableDiffusionGuidanceConfig(model_path=sd_folder, prompt="a red ball")
    recipes.apply(alone_sd, recipes.COARSE_RECIPES["magic123"], parts["stable_diffusion"])
    images, cameras = torch.rand(2, 3, 16, 16), cams([70.0, 180.0], [5.0, 25.0])
    losses = guide.loss(images, cameras, step=0)
    assert set(losses) == {"sd_sds_loss", "zero123_sds_loss"}
    by_zero123 = alone_zero123.setup(context=context()).loss(images, cameras, 0)["zero123_sds_loss"]
    by_sd = alone_sd.setup(context=context()).loss(images, cameras, 0)["sds_loss"]
    assert float(losses["zero123_sds_loss"]) == pytest.approx(float(by_zero123), rel=1e-5)  # joint weight 1
    assert float(losses["sd_sds_loss"]) == pytest.approx(float(by_sd), rel=1e-5)
    status = guide.status(0)
    assert status["sd_t_min"] == status["zero123_t_min"] == pytest.approx(0.2)
    assert guide.stable_diffusion.config.guidance_scale == 100.0 and guide.zero123.config.guidance_scale == 5.0


def test_both_stages_accept_the_new_priors_on_the_command_line():
    import tyro

    from single_image_nerf.guidance.registry import AnyGuidanceConfig
    from single_image_nerf.pipeline import SingleImagePipelineConfig
    from single_image_nerf.refine.pipeline import RefinePipelineConfig

    configs = [get_args(option)[0] for option in get_args(AnyGuidanceConfig)]
    assert Zero123GuidanceConfig in configs and Magic123GuidanceConfig in configs
    for pipeline in (SingleImagePipelineConfig, RefinePipelineConfig):
        parsed = tyro.cli(pipeline, args=["guidance:zero123", "--guidance.guidance-scale", "4",
                                          "--guidance.camera-embedding", "stable-zero123"])
        assert isinstance(parsed.guidance, Zero123GuidanceConfig) and parsed.guidance.guidance_scale == 4.0
        parsed = tyro.cli(pipeline, args=["guidance:magic123", "--guidance.zero123.weight", "20",
                                          "--guidance.stable-diffusion.prompt", "a cup"])
        assert isinstance(parsed.guidance, Magic123GuidanceConfig)
        assert parsed.guidance.zero123.weight == 20.0 and parsed.guidance.stable_diffusion.prompt == "a cup"


# ---------------------------------------------------------------------------------------------------- training
GUIDANCE_WEIGHT_NAMES = ("unet", "vae", "image_encoder", "projection", "text_encoder", "_guidance", "guidance.")


@pytest.mark.parametrize("prior", ["zero123", "magic123"])
def test_coarse_training_with_the_prior_is_finite_and_keeps_weights_out_of_checkpoints(tmp_path, prior):
    from tiny_training import tiny_config, train, write_ball_image

    steps = 3
    image = write_ball_image(tmp_path / "disc.png", size=32)
    config = tiny_config(image, tmp_path / "outputs", steps=steps, image_size=32, novel_resolution=16, rays=128)
    if prior == "zero123":
        config.pipeline.guidance = Zero123GuidanceConfig(model_path=str(tiny_zero123_folder()), weight=1.0)
        expected = {"guidance_zero123_sds_loss"}
    else:
        guidance = Magic123GuidanceConfig()
        guidance.zero123.model_path = str(tiny_zero123_folder())
        guidance.stable_diffusion.model_path = str(tiny_stable_diffusion_folder())
        guidance.stable_diffusion.prompt = "a red and green ball"
        config.pipeline.guidance = guidance
        expected = {"guidance_sd_sds_loss", "guidance_zero123_sds_loss"}
    config.steps_per_save = steps
    torch.manual_seed(0)
    trainer = train(config)
    pipeline = trainer.pipeline
    assert pipeline.skipped_steps == 0
    _, loss_dict, metrics = pipeline.get_train_loss_dict(steps)
    assert expected <= set(loss_dict) and all(torch.isfinite(v) for v in loss_dict.values())
    assert all(float(loss_dict[name]) > 0 for name in expected)
    assert all(torch.isfinite(p).all() for p in pipeline.model.parameters())
    # the prior's loss alone reaches the field
    pipeline.model.zero_grad(set_to_none=True)
    sum(loss_dict[name] for name in expected).backward()
    grads = [p.grad for p in pipeline.model.field.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    saved = torch.load(sorted(trainer.checkpoint_dir.glob("step-*.ckpt"))[-1], map_location="cpu")
    leaked = [key for key in saved["pipeline"] if any(name in key for name in GUIDANCE_WEIGHT_NAMES)]
    assert not leaked, leaked[:5]
