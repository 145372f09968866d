"""The coarse training step does not wait on the device, and a step's novel views render in one batched pass.

On a CPU the waits cannot be observed directly, so every Python-level way of reading a tensor back to the host (the
calls that make the host wait for a CUDA device) is wrapped with a counter around one step. The GPU variant asks
CUDA itself (`torch.cuda.set_sync_debug_mode("error")`), which also catches blocking host-to-device copies.
"""

from __future__ import annotations

import collections
import contextlib
import traceback
from pathlib import Path
from typing import Iterator

import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras, pinhole_ray_bundle
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.models.coarse_model import ViewDraws
from single_image_nerf.models.depth_loss import pearson_depth_loss
from tiny_diffusion import tiny_stable_diffusion_folder
from tiny_training import tiny_config, write_ball_image

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "nonzero", "masked_select",
         "unique")
"""Tensor methods that hand a value to the host (or size an output by the data, as nonzero does)."""


def _is_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in items)


@contextlib.contextmanager
def count_host_reads() -> Iterator[collections.Counter]:
    """Count, by call site, the tensor reads to the host inside the block (boolean-mask indexing included)."""
    sites: collections.Counter = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS + ("__getitem__", "__setitem__")}
    saved_functions = {name: getattr(torch, name) for name in ("nonzero", "masked_select", "unique")}

    def site() -> str:
        frame = traceback.extract_stack(limit=4)[0]
        return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"

    def counted(name, original):
        def wrapper(*args, **kwargs):
            sites[f"{name} {site()}"] += 1
            return original(*args, **kwargs)
        return wrapper

    def indexing(name, original):
        def wrapper(self, index, *args):
            if _is_mask(index):
                sites[f"{name}[mask] {site()}"] += 1
            return original(self, index, *args)
        return wrapper

    try:
        for name in READS:
            setattr(torch.Tensor, name, counted(name, saved[name]))
        for name in ("__getitem__", "__setitem__"):
            setattr(torch.Tensor, name, indexing(name, saved[name]))
        for name, original in saved_functions.items():
            setattr(torch, name, counted(f"torch.{name}", original))
        yield sites
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)
        for name, original in saved_functions.items():
            setattr(torch, name, original)


def test_the_counter_sees_each_kind_of_read():
    values = torch.arange(4.0)
    with count_host_reads() as sites:
        float(values[0]), bool(values[1] > 0), values.tolist(), values[values > 1], values.sum().item()
        torch.nonzero(values)
    assert sum(sites.values()) == 6, sites


def _pipeline(tmp_path: Path, guidance: str, shaded: bool, views: int, device: str = "cpu"):
    image = write_ball_image(tmp_path / "disc.png", size=32)
    config = tiny_config(image, tmp_path / "outputs", steps=4, image_size=32, novel_resolution=16, rays=128)
    if guidance == "stable-diffusion":
        config.pipeline.guidance = StableDiffusionGuidanceConfig(model_path=str(tiny_stable_diffusion_folder()),
                                                                 prompt="a red and green ball")
    config.pipeline.model.shading_start = 0.0 if shaded else 1.0
    config.pipeline.datamanager.novel_views.views_per_step = views
    pipeline = config.pipeline.setup(device=device, test_mode="val", world_size=1, local_rank=0)
    pipeline.train()
    return pipeline


def _step(pipeline, step: int):
    pipeline.model.update_to_step(step)
    _, losses, metrics = pipeline.get_train_loss_dict(step)
    torch.stack(list(losses.values())).sum().backward()
    return losses, metrics


@pytest.mark.parametrize("guidance, shaded", [("none", False), ("none", True), ("stable-diffusion", True)])
def test_a_coarse_training_step_reads_nothing_back(tmp_path, offline_hub, guidance, shaded):
    pipeline = _pipeline(tmp_path, guidance, shaded, views=2)
    _step(pipeline, 0)  # the first step caches the reference view's rays on the device
    with count_host_reads() as sites:
        losses, metrics = _step(pipeline, 1)
    assert sum(sites.values()) == 0, dict(sites)
    # The step did its work: finite losses with the guidance's, status scalars as tensors for the logger.
    assert pipeline.skip_optimizer_step.dtype == torch.bool and not pipeline.skip_optimizer_step
    if guidance == "stable-diffusion":
        assert "guidance_sds_loss" in losses and float(metrics["guidance_sds_grad_norm"]) > 0.0
    assert all(torch.isfinite(value) for value in losses.values())


def test_a_non_finite_loss_is_flagged_on_the_device_and_reported_when_the_guard_reads_the_flag(tmp_path, capsys):
    pipeline = _pipeline(tmp_path, "none", shaded=False, views=1)
    _step(pipeline, 0)
    original = pipeline.model.get_loss_dict
    pipeline.model.get_loss_dict = lambda *args: {**original(*args), "mask_loss": torch.tensor(float("nan"))}
    with count_host_reads() as sites:
        losses, _ = _step(pipeline, 1)
    assert sum(sites.values()) == 0, dict(sites)
    assert all(float(value) == 0.0 for value in losses.values())
    assert bool(pipeline.skip_optimizer_step) and pipeline.skipped_steps == 0
    pipeline.skip_optimizer_step = False  # what the optimizers' guard does after reading it true
    assert pipeline.skipped_steps == 1 and "non-finite mask_loss" in " ".join(capsys.readouterr().out.split())


def test_the_depth_loss_selects_by_weights_and_matches_the_selected_pixels():
    generator = torch.Generator().manual_seed(0)
    rendered = torch.rand(200, 1, generator=generator, requires_grad=True)
    target = 3.0 * rendered.detach() + 0.3 * torch.rand(200, 1, generator=generator)
    target[5] = float("nan")
    mask = torch.rand(200, 1, generator=generator) > 0.4
    with count_host_reads() as sites:
        loss = pearson_depth_loss(rendered, target, mask)
        loss.backward()
    assert sum(sites.values()) == 0, dict(sites)
    keep = mask.reshape(-1) & torch.isfinite(target.reshape(-1))
    x, y = rendered.detach().reshape(-1)[keep], target.reshape(-1)[keep]
    expected = 1.0 - torch.corrcoef(torch.stack([x, y]))[0, 1]
    assert float(loss) == pytest.approx(float(expected), abs=1e-5) and 0.0 < float(loss) < 0.2
    assert torch.isfinite(rendered.grad).all() and float(rendered.grad.reshape(-1)[~keep].abs().max()) == 0.0


def test_batched_rays_are_nerfstudios_rays_camera_by_camera():
    cameras = orbit_cameras(torch.tensor([10.0, 100.0, 250.0]), torch.tensor([5.0, 30.0, -8.0]),
                            torch.tensor([2.5, 2.3, 2.7]), torch.tensor([40.0, 35.0, 44.0]), 12, 10)
    batched = pinhole_ray_bundle(cameras, 10, 12)
    assert batched.shape == (3, 10, 12)
    for index in range(3):
        single = cameras.generate_rays(camera_indices=index, keep_shape=True)
        for name in ("origins", "directions", "pixel_area", "camera_indices"):
            torch.testing.assert_close(getattr(batched, name)[index], getattr(single, name).to(
                getattr(batched, name).dtype), atol=1e-6, rtol=0)


def test_the_batched_render_equals_the_render_camera_by_camera(tmp_path):
    pipeline = _pipeline(tmp_path, "none", shaded=True, views=3)
    model = pipeline.model
    model.update_to_step(5)
    for sampler in (model.proposal_sampler.initial_sampler, model.proposal_sampler.pdf_sampler):
        sampler.train_stratified = False  # the same samples whichever rays share the pass
    cameras = pipeline.datamanager.next_novel_cameras(5)
    draws = model.draw_views(3)
    draws.shading = torch.tensor([0, 1, 2])  # one view of each shading
    batched = model.render_views(cameras, draws=draws, image_size=(16, 16))
    assert batched["rgb"].shape == (3, 3, 16, 16) and set(batched) >= {"accumulation", "depth", "normals"}
    for index in range(3):
        single = model.render_views(cameras[index:index + 1], draws=draws.select(index))
        for key, value in single.items():
            if key == "interlevel":  # the proposal sampler's loss over the whole batch, not one per view
                continue
            expected, actual = value, batched[key][index:index + 1]
            if key == "depth":  # nerfstudio clips depth to the pass's sample range: empty rays differ by design
                solid = single["accumulation"] > 1e-3
                expected, actual = expected[solid], actual[solid]
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # Each view has its own background and shading: a textureless view is grey where the albedo view is coloured.
    plain = model.render_views(cameras, draws=ViewDraws(draws.backgrounds, torch.zeros(3, dtype=torch.long),
                                                        draws.light_jitter), image_size=(16, 16))
    assert torch.equal(plain["rgb"][0], batched["rgb"][0]) and not torch.allclose(plain["rgb"][1], batched["rgb"][1])
    assert not torch.allclose(batched["rgb"][0, :, 0, 0], batched["rgb"][1, :, 0, 0])  # corner: the background


def test_several_views_per_step_cost_one_render_pass(tmp_path, monkeypatch):
    pipeline = _pipeline(tmp_path, "none", shaded=True, views=4)
    model = pipeline.model
    calls = []
    original = model.get_outputs
    monkeypatch.setattr(model, "get_outputs", lambda bundle, **kwargs: calls.append(bundle.shape) or original(
        bundle, **kwargs))
    pipeline.get_train_loss_dict(0)
    assert calls == [(128,), (4 * 16 * 16,)]  # the reference batch, then all four views at once
    assert pipeline.last_novel_views[2].shape == (4, 3, 16, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("guidance", ["none", "stable-diffusion"])
def test_a_coarse_training_step_on_cuda_never_waits(tmp_path, offline_hub, guidance):
    pipeline = _pipeline(tmp_path, guidance, shaded=True, views=2, device="cuda")
    _step(pipeline, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses, _ = _step(pipeline, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(value) for value in losses.values())
