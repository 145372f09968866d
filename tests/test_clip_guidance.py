"""Make-It-3D's CLIP option of the Stable Diffusion guidance, with a tiny random CLIPModel (text and vision towers,
the tiny tokenizer and a CLIP image processor config) built offline and loaded back with `from_pretrained`."""

from __future__ import annotations

import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.clip_guidance import ClipGuidanceConfig
from single_image_nerf.guidance.loading import GuidanceUnavailableError
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from tiny_diffusion import tiny_clip_folder, tiny_stable_diffusion_folder

CPU = torch.device("cpu")
SMALL_T = (0.02, 0.3)
"""A timestep range below the CLIP option's `max_t` (0.4): every view gets the CLIP losses."""


pytestmark = pytest.mark.usefixtures("offline_hub")


def reference_rgba(size: int = 24) -> torch.Tensor:
    """A red disc with a soft alpha edge on a transparent background, (H, W, 4) in [0, 1]."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = torch.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2)
    alpha = (0.35 * size - radius).clamp(0.0, 1.0)
    rgb = torch.stack([torch.full_like(alpha, 0.9), 0.2 + 0.5 * rows / size, torch.full_like(alpha, 0.1)], dim=-1)
    return torch.cat([rgb, alpha[..., None]], dim=-1)


def views(count: int, size: int = 16):
    azimuths = torch.linspace(30.0, 300.0, count)
    return orbit_cameras(azimuths, torch.zeros(count), torch.full((count,), 2.5), torch.full((count,), 40.0),
                         size, size)


def guidance(clip: ClipGuidanceConfig, t_range=SMALL_T, **options):
    config = StableDiffusionGuidanceConfig(model_path=str(tiny_stable_diffusion_folder()), prompt="a red ball",
                                           t_range=t_range, t_range_end=t_range, clip=clip, **options)
    return config.setup(context=GuidanceContext(device=CPU, reference_image=reference_rgba()))


def enabled(**options) -> ClipGuidanceConfig:
    return ClipGuidanceConfig(enabled=True, model_path=str(tiny_clip_folder()), **options)


def test_clip_option_is_off_by_default():
    assert StableDiffusionGuidanceConfig().clip.enabled is False
    guide = guidance(StableDiffusionGuidanceConfig().clip)
    assert guide.clip is None
    assert set(guide.loss(torch.rand(2, 3, 16, 16), views(2), step=0)) == {"sds_loss"}


def test_clip_losses_are_finite_and_reach_the_renders_while_clip_stays_frozen():
    guide = guidance(enabled())
    assert guide.clip.size == 32  # read from the tiny model's vision config
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    losses = guide.loss(images, views(2), step=0)
    assert set(losses) == {"sds_loss", "clip_image_loss", "clip_text_loss"}
    assert all(torch.isfinite(value) for value in losses.values())
    trace = guide.last_trace
    assert bool((trace.t <= 0.4 * guide.num_train_timesteps).all())
    # CLIP scores the one-step-denoised views (x0 predicted from the trace's z_t and guided noise), not the renders.
    with torch.no_grad():
        abar = guide.alphas_cumprod[trace.t].reshape(-1, 1, 1, 1)
        denoised = guide.decode((trace.noisy - (1 - abar).sqrt() * trace.eps_hat) / abar.sqrt())
        expected = guide.clip.loss(denoised)
        on_renders = guide.clip.loss(images.detach())
    for name in ("clip_image_loss", "clip_text_loss"):
        assert losses[name].item() == pytest.approx(expected[name].item(), rel=1e-4, abs=1e-6), name
        assert losses[name].item() != pytest.approx(on_renders[name].item(), rel=1e-3), name

    # With `replace_sds` (the default) the small-t views take their gradient from CLIP alone.
    sds_grad, = torch.autograd.grad(losses["sds_loss"], images, retain_graph=True, allow_unused=True)
    assert sds_grad is None or float(sds_grad.abs().sum()) == 0.0
    (losses["clip_image_loss"] + losses["clip_text_loss"]).backward()
    assert torch.isfinite(images.grad).all() and float(images.grad.abs().sum()) > 0.0
    assert all(not p.requires_grad and p.grad is None for p in guide.clip.model.parameters())


def test_each_clip_loss_alone_gives_a_gradient_and_sds_can_be_kept():
    guide = guidance(enabled(replace_sds=False, image_weight=1.0, text_weight=2.0))
    for name in ("clip_image_loss", "clip_text_loss", "sds_loss"):
        images = torch.rand(1, 3, 16, 16, requires_grad=True)
        guide.loss(images, views(1), step=0)[name].backward()
        assert float(images.grad.abs().sum()) > 0.0, name


def test_clip_losses_apply_only_at_small_timesteps():
    guide = guidance(enabled(), t_range=(0.6, 0.98))
    assert set(guide.loss(torch.rand(2, 3, 16, 16), views(2), step=0)) == {"sds_loss"}


def test_reference_image_is_its_own_best_match():
    guide = guidance(enabled())
    rgba = reference_rgba()
    on_white = (rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])).permute(2, 0, 1)[None]
    losses = guide.clip.loss(on_white)
    assert float(losses["clip_image_loss"]) == pytest.approx(0.0, abs=1e-4)
    assert float(guide.clip.loss(torch.rand(1, 3, 24, 24))["clip_image_loss"]) > 1e-3


def test_losses_are_weighted_cosine_distances_computed_by_hand():
    """Make-It-3D's losses, w (1 - cos), from the saved CLIP model read back independently: the views against the
    reference composited on white and against the prompt."""
    import json

    from transformers import CLIPModel, CLIPTokenizer

    folder = tiny_clip_folder()
    guide = guidance(enabled(image_weight=3.0, text_weight=7.0))
    model = CLIPModel.from_pretrained(folder).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    mean = torch.tensor(processor["image_mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(processor["image_std"]).reshape(1, 3, 1, 1)
    size = model.config.vision_config.image_size

    def features(output):
        output = output if isinstance(output, torch.Tensor) else output.pooler_output
        return output / output.norm(dim=-1, keepdim=True)

    def image_features(images):  # (B, 3, H, W) in [0, 1], upsampled to CLIP's input size
        pixels = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return features(model.get_image_features(pixel_values=(pixels - mean) / std))

    rgba = reference_rgba()
    reference = (rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])).permute(2, 0, 1)[None]
    views = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ids = tokenizer(["a red ball"], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        got = guide.clip.loss(views)
        ours = image_features(views)
        image_cos = (ours * image_features(reference)).sum(-1)
        text_cos = (ours * features(model.get_text_features(input_ids=ids))).sum(-1)
    assert float(got["clip_image_loss"]) == pytest.approx(float(3.0 * (1 - image_cos).mean()), rel=1e-4, abs=1e-6)
    assert float(got["clip_text_loss"]) == pytest.approx(float(7.0 * (1 - text_cos).mean()), rel=1e-4, abs=1e-6)


def test_missing_clip_weights_fail_with_one_line_naming_the_option(tmp_path):
    with pytest.raises(GuidanceUnavailableError) as error:
        guidance(ClipGuidanceConfig(enabled=True, model_path=str(tmp_path / "no-clip")))
    message = str(error.value)
    assert "--pipeline.guidance.clip.model-path" in message and "\n" not in message and error.value.code != 0
