"""The GPU path, run by `pytest -m gpu` (tools/gpu_check.sh) and skipped without CUDA: coarse steps with the Stable
Diffusion 2.1-base architecture at random weights, the fp16 VAE encoder's gradient against fp32, refine steps with
gsplat's densification, and a CUDA-trained coarse checkpoint loaded on the CPU for a mesh export."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

from tiny_training import record_losses

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.usefixtures("offline_hub")]

ROOT = Path(__file__).resolve().parents[1]
COARSE_STEPS = 6
ALBEDO_STEPS = 3


@pytest.fixture(scope="module")
def sd21_parts():
    """The SD-2.1-base architecture at random weights on CUDA in fp16, as the guidance loads it there."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from guidance_step import sd21_base_parts  # pylint: disable=import-outside-toplevel

    with torch.device("cuda"):  # initialise on the GPU
        parts = sd21_base_parts(torch.device("cuda"), torch.float16)
    yield parts
    del parts
    torch.cuda.empty_cache()


@pytest.fixture()
def use_sd21(sd21_parts, monkeypatch):
    """Guidance built in this test takes the in-memory SD-2.1-base parts instead of loading a folder."""
    from single_image_nerf.guidance import loading

    monkeypatch.setattr(loading, "stable_diffusion_folder", lambda *args, **kwargs: sd21_parts.folder)
    monkeypatch.setattr(loading, "load_stable_diffusion", lambda *args, **kwargs: sd21_parts)
    return sd21_parts


def cuda_coarse_config(root: Path, steps: int):
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from tiny_training import tiny_config, write_ball_image

    config = tiny_config(write_ball_image(root / "disc.png", size=64), root / "outputs", steps=steps, image_size=64,
                         novel_resolution=64, rays=1024)
    config.machine.device_type = "cuda"
    config.steps_per_save = steps
    config.pipeline.model.shading_start = ALBEDO_STEPS / steps
    config.pipeline.guidance = StableDiffusionGuidanceConfig(model_path="<in memory>", prompt="a red ball")
    return config


def test_coarse_steps_on_cuda_with_the_sd21_base_architecture(use_sd21, tmp_path):
    torch.manual_seed(0)
    config = cuda_coarse_config(tmp_path, COARSE_STEPS)
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    guide = pipeline.guidance
    assert guide.encoder == "vae" and guide.dtype == torch.float16 and guide.latent_size == 64
    before = {name: value.detach().clone() for name, value in pipeline.model.named_parameters()}
    assert all(value.is_cuda for value in before.values())
    losses = record_losses(pipeline)
    trainer.train()
    assert len(losses) == COARSE_STEPS and pipeline.skipped_steps == 0 and guide.skipped_steps == 0
    for step_losses in losses:  # albedo steps, then shaded ones (normals through the field on CUDA)
        assert "guidance_sds_loss" in step_losses, step_losses
        assert all(torch.isfinite(torch.tensor(value)) for value in step_losses.values()), step_losses
    after = dict(pipeline.model.named_parameters())
    assert all(torch.isfinite(value).all() for value in after.values())
    assert any(not torch.equal(before[name], after[name].detach()) for name in before)


@pytest.mark.parametrize("t_fraction", [0.02, 0.5, 0.98])
def test_fp16_vae_encoder_gradient_matches_fp32(use_sd21, t_fraction):
    """The renders' gradient through the fp16 VAE encoder (the guidance's CUDA path) points where the fp32 one does,
    for the SDS gradient of one fixed score at small, middle and large t."""
    from single_image_nerf.guidance import sds
    from single_image_nerf.guidance.base import GuidanceContext
    from single_image_nerf.guidance.latents import resize, vae_encode
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig

    guide = StableDiffusionGuidanceConfig(model_path="<in memory>", prompt="a red ball").setup(
        context=GuidanceContext(device=torch.device("cuda")))
    assert guide.encoder == "vae" and next(guide.vae.parameters()).dtype == torch.float16
    vae32 = copy.deepcopy(guide.vae).float()  # the same weights, computed in fp32
    generator = torch.Generator().manual_seed(0)
    renders = torch.rand(2, 3, 64, 64, generator=generator).cuda()
    renders = torch.nn.functional.interpolate(renders, size=128, mode="bilinear")  # smooth, like a render
    t = torch.full((2,), round(t_fraction * (guide.num_train_timesteps - 1)), dtype=torch.long)
    noise = torch.randn(2, 4, guide.latent_size, guide.latent_size, generator=generator)
    cond = guide.cond_embeddings[:1].expand(2, -1, -1)
    with torch.no_grad():
        reference_latents = vae_encode(vae32, resize(renders, guide.resolution))
    grad = guide.score(reference_latents, cond, step=0, t=t, noise=noise).grad
    assert torch.isfinite(grad).all() and grad.abs().max() > 0

    gradients = []
    for vae in (guide.vae, vae32):
        images = renders.clone().requires_grad_(True)
        latents = vae_encode(vae, resize(images, guide.resolution))
        sds.sds_loss(latents, grad).backward()
        gradients.append(images.grad.flatten().double())
    half, full = gradients
    assert torch.isfinite(half).all() and full.norm() > 0
    cosine = torch.nn.functional.cosine_similarity(half, full, dim=0)
    assert cosine >= 0.99, f"t={t_fraction}: cosine {float(cosine):.4f}"


def test_refine_steps_with_densification_on_cuda(tmp_path):
    """The CPU refine test's run (tests/test_refine.py) on CUDA through gsplat's kernels: densification at steps 3
    and 6 adds Gaussians, every step's losses are finite and every parameter stays on the GPU."""
    from test_refine import COARSE_STEPS as REFINE_COARSE_STEPS, REFINE_STEPS, SEED_POINTS, tiny_refine_config
    from tiny_training import tiny_config, train, write_ball_image

    torch.manual_seed(0)
    coarse = tiny_config(write_ball_image(tmp_path / "disc.png", size=32), tmp_path / "coarse",
                         steps=REFINE_COARSE_STEPS, rays=256)
    coarse.machine.device_type = "cuda"
    coarse.steps_per_save = REFINE_COARSE_STEPS
    train(coarse)
    config = tiny_refine_config(coarse.get_base_dir() / "config.yml", tmp_path / "refine", REFINE_STEPS)
    config.machine.device_type = "cuda"
    config.pipeline.model.rasterizer = "gsplat"
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    splats = trainer.pipeline.model
    assert splats.means.is_cuda and splats.num_points == SEED_POINTS
    losses = record_losses(trainer.pipeline)
    trainer.train()
    assert len(losses) == REFINE_STEPS and trainer.pipeline.skipped_steps == 0
    for step_losses in losses:
        assert {"rgb_loss", "mask_loss", "contextual_loss"} <= set(step_losses)
        assert all(torch.isfinite(torch.tensor(value)) for value in step_losses.values()), step_losses
    assert splats.num_points > SEED_POINTS
    for name, value in splats.gauss_params.items():
        assert value.is_cuda and torch.isfinite(value).all(), name


def test_cuda_trained_coarse_checkpoint_exports_a_mesh_on_the_cpu(tmp_path):
    import subprocess

    import trimesh

    from tiny_training import tiny_config, train, write_ball_image

    torch.manual_seed(0)
    config = tiny_config(write_ball_image(tmp_path / "disc.png", size=32), tmp_path / "outputs", steps=5, rays=256)
    config.machine.device_type = "cuda"
    config.steps_per_save = 5
    train(config)
    config_path = config.get_base_dir() / "config.yml"
    saved = torch.load(sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))[-1], map_location="cpu")
    assert saved["step"] == 4
    output = tmp_path / "mesh.ply"
    # A machine without a GPU: the export in a process that sees no CUDA device.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "single_image_nerf.scripts.export_mesh", "--load-config",
                             str(config_path), "--output", str(output), "--resolution", "32", "--level", "1.0"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    mesh = trimesh.load(output, force="mesh", process=False)
    assert len(mesh.faces) > 0 and abs(mesh.vertices).max() <= 1.0 + 1e-4
