#!/usr/bin/env python
"""Milliseconds per step of a guidance apart from rendering, on the current device.

    .venv/bin/python benchmarks/guidance_step.py                                  # tiny random pipeline
    .venv/bin/python benchmarks/guidance_step.py --architecture sd21-base --repeats 1 --warmup 0 --with-render
    .venv/bin/python benchmarks/guidance_step.py --prior zero123                  # tiny random Zero123
    .venv/bin/python benchmarks/guidance_step.py --prior magic123 --architecture real --repeats 1 --warmup 0

`--prior zero123` times the Zero123 guidance the same way (the reference's CLIP embedding and VAE latent once at
set-up, the camera projection per step, each encoder, the UNet on [uncond; cond] with 8 input channels); `--prior
magic123` times both priors and their sum. `--architecture real` means sd21-base for Stable Diffusion and the
Zero123-XL architecture (SD 1.x UNet with 8 input channels at 32² latents, the SD VAE at 256 px, CLIP ViT-L/14 image
encoder) at random weights for Zero123: slow on a CPU (about a minute to build, seconds per UNet call).

The guidance is built by its own code (`StableDiffusionGuidance.__init__`) and timed part by part: the text encoding
(once, at set-up: the prompts are fixed, so nothing of it is paid per step), each encoder (vae: the VAE encoder at
the model's native size; latent: resize to the latent grid and an affine colour map), the UNet with classifier-free
guidance (one batch of 2 per view: unconditional and conditional), and the backward from the SDS loss to the renders.
With `--with-render`, a full coarse training step (nerfstudio's Trainer, default model and a 64x64 novel view) is
timed too, and the share of it spent outside the UNet is printed.

`tiny` is the small random pipeline of tests/tiny_diffusion.py with an 8x VAE (saved and loaded back through
`from_pretrained`). `sd21-base` builds the Stable Diffusion 2.1-base UNet, VAE and OpenCLIP-H text encoder from their
configurations, written below, at random weights: the same compute as the real model and nothing to download (the
tokenizer is the tiny byte-level one; the vocabulary does not change the cost). Weights are fp16 on CUDA and fp32
elsewhere, as the guidance loads them. On a CPU, sd21-base takes about 12 s per UNet call: use 1-2 repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a red ceramic teapot"
NEGATIVE = "blurry, low quality"


# ------------------------------------------------------------------------------------------------- the models


def _tests_on_path() -> None:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


def sd21_base_parts(device, dtype):
    """The SD-2.1-base architecture at random weights, frozen, as the guidance's loader returns it."""
    import torch
    from diffusers import DDPMScheduler

    from single_image_nerf.guidance.loading import StableDiffusionParts, freeze

    _tests_on_path()
    from tiny_diffusion import _tiny_tokenizer, sd21_base_modules  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(Path(tempfile.mkdtemp(prefix="guidance-step-")) / "tokenizer")
    text_encoder, unet, vae = sd21_base_modules(tokenizer)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, prediction_type="epsilon")
    # diffusers' `to(dtype=...)` warns even for an fp32 no-op: cast only when the dtype changes.
    modules = {name: freeze(module.to(device) if dtype == torch.float32 else module.to(device, dtype))
               for name, module in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae))}
    return StableDiffusionParts(tokenizer=tokenizer, scheduler=scheduler, folder=Path("<in memory>"), **modules)


def tiny_parts(device, dtype):
    """The tiny random pipeline (8x VAE), saved and loaded back through the guidance's own loader."""
    from single_image_nerf.guidance.loading import load_stable_diffusion

    _tests_on_path()
    from tiny_diffusion import build_tiny_stable_diffusion  # pylint: disable=import-outside-toplevel

    folder = build_tiny_stable_diffusion(Path(tempfile.mkdtemp(prefix="guidance-step-")) / "sd", vae_downsample=8)
    return load_stable_diffusion(str(folder), device, dtype, "--model-path")


def use_parts(parts) -> None:
    """Make the guidance (and a pipeline that builds one) take `parts` instead of loading from a folder."""
    from single_image_nerf.guidance import loading

    loading.stable_diffusion_folder = lambda *args, **kwargs: parts.folder
    loading.load_stable_diffusion = lambda *args, **kwargs: parts


def zero123_parts(architecture: str, device, dtype):
    """Zero123 parts: the tiny random folder (8x VAE, 64 px native) loaded through the guidance's own loader, or the
    Zero123-XL architecture at random weights built in memory."""
    import torch

    from single_image_nerf.guidance.zero123 import Zero123Parts, load_zero123

    _tests_on_path()
    import tiny_zero123  # pylint: disable=import-outside-toplevel

    folder = tiny_zero123.build_tiny_zero123(Path(tempfile.mkdtemp(prefix="guidance-step-")) / "zero123",
                                             vae_downsample=8)
    if architecture == "tiny":
        return load_zero123(str(folder), device, dtype, "--model-path")
    from diffusers import DDPMScheduler
    from transformers import CLIPImageProcessor

    from single_image_nerf.guidance.loading import freeze

    torch.manual_seed(0)
    unet, vae, image_encoder, projection = tiny_zero123.zero123_xl_modules()
    modules = {name: freeze(module.to(device) if dtype == torch.float32 else module.to(device, dtype))
               for name, module in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder),
                                    ("projection", projection))}
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False)
    extractor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return Zero123Parts(feature_extractor=extractor, scheduler=scheduler, folder=Path("<in memory>"), **modules)


def use_zero123_parts(parts) -> None:
    """Make the Zero123 guidance take `parts` instead of loading from a folder."""
    from single_image_nerf.guidance import zero123

    zero123.zero123_folder = lambda *args, **kwargs: parts.folder
    zero123.load_zero123 = lambda *args, **kwargs: parts


def reference_context(device):
    """A GuidanceContext with a reference photo (a red disc) and its camera at elevation 10."""
    import torch

    from single_image_nerf.data.camera_sampling import orbit_cameras
    from single_image_nerf.guidance.base import GuidanceContext

    side = 128
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    alpha = ((rows - side / 2) ** 2 + (cols - side / 2) ** 2 < (0.35 * side) ** 2).float()
    rgba = torch.stack([torch.ones_like(alpha), 0.2 * torch.ones_like(alpha), 0.1 * torch.ones_like(alpha), alpha], -1)
    camera = orbit_cameras(torch.tensor([0.0]), torch.tensor([10.0]), torch.tensor([2.5]), torch.tensor([40.0]), side,
                           side)
    return GuidanceContext(device=device, reference_image=rgba, reference_cameras=camera)


# ------------------------------------------------------------------------------------------------------ timing


class Timer:
    """Median milliseconds of a callable after untimed warm-up calls; synchronises CUDA around each call."""

    def __init__(self, device, repeats: int, warmup: int) -> None:
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, function: Callable[[], object], repeats: Optional[int] = None) -> float:
        for _ in range(self.warmup):
            function()
        durations = []
        for _ in range(repeats or self.repeats):
            self.sync()
            start = time.perf_counter()
            function()
            self.sync()
            durations.append(1000.0 * (time.perf_counter() - start))
        return statistics.median(durations)


class ModuleClock:
    """Wall time spent inside a module's forward calls (CUDA synchronised at both ends)."""

    def __init__(self, module, timer: Timer) -> None:
        self.total_ms, self.calls, self.timer, self._start = 0.0, 0, timer, 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, *_):
        self.timer.sync()
        self._start = time.perf_counter()

    def _after(self, *_):
        self.timer.sync()
        self.total_ms += 1000.0 * (time.perf_counter() - self._start)
        self.calls += 1

    def reset(self) -> None:
        self.total_ms, self.calls = 0.0, 0


def cameras_for(views: int, size: int, device):
    import torch

    from single_image_nerf.data.camera_sampling import orbit_cameras

    azimuths = torch.linspace(20.0, 200.0, views)
    return orbit_cameras(azimuths, torch.full((views,), 10.0), torch.full((views,), 2.5),
                         torch.full((views,), 40.0), size, size).to(device)


def guidance_rows(guide, parts, args, timer: Timer) -> Tuple[List[Tuple[str, float]], Dict[str, float]]:
    """(label, ms) rows of the guidance's parts, and the per-step sums for each encoder."""
    import torch

    device = guide.device
    texts = guide.prompts + [guide.config.negative_prompt]
    encode_text = guide._encode_text  # pylint: disable=protected-access
    rows = [(f"text encoding, {len(texts)} prompts (once at set-up; cached: 0 per step)",
             timer(lambda: encode_text(parts.text_encoder, texts), repeats=1))]
    cameras = cameras_for(args.views, args.render, device)
    rows.append(("view embeddings, per step (lookup of the cached prompts)",
                 timer(lambda: guide.view_embeddings(cameras))))
    cond = guide.view_embeddings(cameras)
    renders = torch.rand(args.views, 3, args.render, args.render, device=device)
    more, totals = encoder_and_score_rows(guide, args, timer, renders, cond,
                                          f"UNet with CFG (batch {2 * args.views}) at {guide.latent_size}² latents",
                                          "score around the UNet (noise, CFG, w(t), gradient)")
    rows.extend(more)
    return rows, totals


def zero123_rows(guide, args, timer: Timer) -> Tuple[List[Tuple[str, float]], Dict[str, float]]:
    """(label, ms) rows of the Zero123 guidance's parts, and the per-step sums for each encoder."""
    import torch

    device = guide.device
    cameras = cameras_for(args.views, args.render, device)
    rows = [(f"set-up, once (latent map fit, {guide.resolution}px reference composite, CLIP embedding, VAE latent)",
             guide.setup_ms)]
    rows.append(("camera numbers and projection, per step", timer(lambda: guide.camera_states(cameras))))
    states = guide.camera_states(cameras)
    renders = torch.rand(args.views, 3, args.render, args.render, device=device)
    more, totals = encoder_and_score_rows(
        guide, args, timer, renders, states,
        f"UNet with CFG (batch {2 * args.views}, 8 input channels) at {guide.latent_size}² latents",
        "score around the UNet (noise, reference concat, CFG, w(t), gradient)", per_step_ms=rows[1][1])
    rows.extend(more)
    return rows, totals


def encoder_and_score_rows(guide, args, timer: Timer, renders, cond, unet_label: str, score_label: str,
                           per_step_ms: float = 0.0) -> Tuple[List[Tuple[str, float]], Dict[str, float]]:
    """Rows of each encoder's forward and backward and of the UNet with CFG and the score around it, and each
    encoder's per-step total (plus `per_step_ms` of other per-step work)."""
    import torch

    from single_image_nerf.guidance import sds
    from single_image_nerf.guidance.latents import fit_linear_latent_map

    rows: List[Tuple[str, float]] = []
    totals: Dict[str, float] = {}
    latents = None
    for encoder in args.encoders:
        guide.encoder = encoder
        if encoder == "latent" and guide.latent_map is None:
            guide.latent_map = fit_linear_latent_map(guide.vae, guide.device)
        forward: List[float] = []
        backward: List[float] = []
        for index in range(timer.warmup + timer.repeats):
            images = renders.clone().requires_grad_(True)
            timer.sync()
            start = time.perf_counter()
            latents = guide.encode(images)
            timer.sync()
            middle = time.perf_counter()
            sds.sds_loss(latents, torch.randn_like(latents)).backward()
            timer.sync()
            if index >= timer.warmup:
                forward.append(1000.0 * (middle - start))
                backward.append(1000.0 * (time.perf_counter() - middle))
        size = guide.resolution if encoder == "vae" else guide.latent_size
        rows.append((f"encoder {encoder}: {args.render}px render -> {size}px -> {guide.latent_size}² latents, forward",
                     statistics.median(forward)))
        rows.append((f"encoder {encoder}: backward from the SDS loss to the renders", statistics.median(backward)))
        totals[encoder] = statistics.median(forward) + statistics.median(backward) + per_step_ms
    clock = ModuleClock(guide.unet, timer)
    latents = latents.detach()
    for _ in range(timer.warmup):
        guide.score(latents, cond, step=0)
    clock.reset()
    score_ms = Timer(guide.device, timer.repeats, 0)(lambda: guide.score(latents, cond, step=0))
    unet_ms = clock.total_ms / max(clock.calls, 1)
    rows.append((unet_label, unet_ms))
    rows.append((score_label, max(score_ms - unet_ms, 0.0)))
    for encoder in totals:
        totals[encoder] += score_ms
    return rows, totals


def print_rows(title: str, rows, totals) -> None:
    print(title)
    print("| part | ms |\n|---|---:|")
    for label, ms in rows:
        print(f"| {label} | {ms:,.1f} |")
    for encoder, ms in totals.items():
        print(f"| guidance total per step, encoder {encoder} (encode + score + backward) | {ms:,.1f} |")


def full_step(parts, args, timer: Timer, encoder: str) -> Dict[str, float]:
    """One coarse training step through nerfstudio's Trainer with this guidance: ms per step and ms in the UNet."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    _tests_on_path()
    from tiny_training import write_ball_image  # pylint: disable=import-outside-toplevel

    work = Path(tempfile.mkdtemp(prefix="guidance-step-"))
    config = headless(coarse_trainer_config(max_steps=1_000_000), timer.device.type, work / "outputs")
    config.steps_per_save = config.steps_per_eval_image = config.steps_per_eval_batch = 1_000_000
    config.steps_per_eval_all_images = 1_000_000
    pipeline = config.pipeline
    pipeline.datamanager.data = write_ball_image(work / "ball.png", size=128)
    pipeline.datamanager.novel_views.resolution = args.render
    pipeline.datamanager.novel_views.views_per_step = args.views
    pipeline.model.shading_start = 0.0  # shaded steps (normals through the field): the costlier kind
    pipeline.guidance = StableDiffusionGuidanceConfig(model_path="<in memory>", prompt=PROMPT,
                                                      negative_prompt=NEGATIVE, encoder=encoder,
                                                      resolution=args.resolution)
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.pipeline.train()
    clock = ModuleClock(trainer.pipeline.guidance.unet, timer)
    step = [0]

    def one() -> None:
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step[0], location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step[0])
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step[0], location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        step[0] += 1

    for _ in range(timer.warmup):
        one()
    clock.reset()
    step_ms = Timer(timer.device, timer.repeats, 0)(one)
    unet_ms = clock.total_ms / max(clock.calls, 1)
    return {"step_ms": step_ms, "unet_ms": unet_ms, "encoder": trainer.pipeline.guidance.encoder}


# -------------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", choices=("stable-diffusion", "zero123", "magic123"), default="stable-diffusion")
    parser.add_argument("--architecture", choices=("tiny", "sd21-base", "real"), default="tiny",
                        help="tiny random models, or the real architectures at random weights (sd21-base = real "
                             "for Stable Diffusion; Zero123-XL for Zero123)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--encoders", nargs="+", choices=("latent", "vae"), default=["latent", "vae"])
    parser.add_argument("--render", type=int, default=64, help="side of the novel-view render in pixels")
    parser.add_argument("--views", type=int, default=1, help="novel views per step")
    parser.add_argument("--resolution", type=int, default=None,
                        help="image side the latents stand for (default: the model's native size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--with-render", action="store_true",
                        help="also time a full coarse training step and the share spent outside the UNet")
    parser.add_argument("--step-encoder", choices=("auto", "latent", "vae"), default="auto",
                        help="encoder of the full training step")
    args = parser.parse_args()

    import torch

    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from single_image_nerf.guidance.base import GuidanceContext

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    timer = Timer(device, args.repeats, args.warmup)

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    common = (f"({str(dtype).replace('torch.', '')}, {where}), {args.views} view(s) of {args.render}px, median of "
              f"{args.repeats} after {args.warmup} warm-up")
    real = args.architecture != "tiny"
    step_totals: Dict[str, Dict[str, float]] = {}
    parts = None
    if args.prior in ("stable-diffusion", "magic123"):
        start = time.perf_counter()
        parts = (sd21_base_parts if real else tiny_parts)(device, dtype)
        build_s = time.perf_counter() - start
        use_parts(parts)
        config = StableDiffusionGuidanceConfig(model_path="<in memory>", prompt=PROMPT, negative_prompt=NEGATIVE,
                                               resolution=args.resolution)
        guide = config.setup(context=GuidanceContext(device=device))
        rows, step_totals["Stable Diffusion"] = guidance_rows(guide, parts, args, timer)
        print_rows(f"\nStable Diffusion guidance per step, {'sd21-base' if real else 'tiny'} {common}; models built "
                   f"in {build_s:.1f} s", rows, step_totals["Stable Diffusion"])
        del guide
    if args.prior in ("zero123", "magic123"):
        from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig

        start = time.perf_counter()
        z_parts = zero123_parts("real" if real else "tiny", device, dtype)
        build_s = time.perf_counter() - start
        use_zero123_parts(z_parts)
        timer.sync()
        start = time.perf_counter()
        z_guide = Zero123GuidanceConfig(model_path="<in memory>", resolution=args.resolution).setup(
            context=reference_context(device))
        timer.sync()
        z_guide.setup_ms = 1000.0 * (time.perf_counter() - start)
        rows, step_totals["Zero123"] = zero123_rows(z_guide, args, timer)
        print_rows(f"\nZero123 guidance per step, {'zero123-xl' if real else 'tiny'} {common}; models built in "
                   f"{build_s:.1f} s", rows, step_totals["Zero123"])
    if len(step_totals) == 2:
        print("\nMagic123 (both priors on the same renders) per step")
        print("| encoder | Stable Diffusion ms | Zero123 ms | total ms |\n|---|---:|---:|---:|")
        for encoder in args.encoders:
            sd_ms, z_ms = step_totals["Stable Diffusion"][encoder], step_totals["Zero123"][encoder]
            print(f"| {encoder} | {sd_ms:,.1f} | {z_ms:,.1f} | {sd_ms + z_ms:,.1f} |")

    if args.with_render and parts is not None:
        step = full_step(parts, args, timer, args.step_encoder)
        outside = step["step_ms"] - step["unet_ms"]
        print(f"\nfull coarse training step (Trainer, default model, shaded, {args.views} novel view(s) of "
              f"{args.render}px, encoder {step['encoder']})")
        print("| step ms | UNet ms | outside the UNet ms | share outside the UNet |\n|---:|---:|---:|---:|")
        print(f"| {step['step_ms']:,.1f} | {step['unet_ms']:,.1f} | {outside:,.1f} | "
              f"{100.0 * outside / step['step_ms']:.1f} % |")


if __name__ == "__main__":
    main()
