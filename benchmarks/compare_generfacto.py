"""Time one training step of nerfstudio's generfacto and of our coarse stage with the same Stable Diffusion folder.

Both methods load the same offline pipeline (a tiny random one whose VAE downsamples 8x like the real one, or the
SD-2.1-base architecture at random weights with `--sd-architecture sd21-base`) and render 64x64 novel views with 256
and 96 proposal samples and 48 field samples per ray. generfacto reads the folder through its `SD_IDENTIFIERS` table
(patched here) and is forced to fp32 on the CPU (it hard-codes fp16, about 18x slower there). Each variant runs in a
fresh process, so that its peak memory is its own: resident set size on the CPU, peak allocated memory on CUDA.

    .venv/bin/python benchmarks/compare_generfacto.py                 # CPU here, CUDA when there is a GPU
    .venv/bin/python benchmarks/compare_generfacto.py --sd-architecture sd21-base --device cuda

Rows: generfacto (also with the allocator setting our CPU training makes, `cpu_allocator.keep_freed_memory`, for
a like-for-like view of the rest); ours at generfacto's settings with the VAE encoder at 512 px; ours with the
latent encoder (our CPU default: renders mapped straight to the 64x64 latent grid). Each of ours is timed in the
albedo phase (no normals) and the shaded phase (normals from the density gradient, as generfacto always does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
RENDER_SIZE = 64
PROPOSAL_SAMPLES = (256, 96)
FIELD_SAMPLES = 48
PROMPT = "a box with differently coloured faces"

VARIANTS: Dict[str, str] = {
    "generfacto": "generfacto (nerfstudio 1.1.5, torch hash grid)",
    "generfacto-kept-heap": "generfacto, freed memory kept in the process",
    "ours-vae-albedo": "ours, VAE encoder at 512 px, albedo phase",
    "ours-vae-shaded": "ours, VAE encoder at 512 px, shaded phase (normals)",
    "ours-latent-albedo": "ours, latent encoder, albedo phase",
    "ours-latent-shaded": "ours, latent encoder, shaded phase (normals)",
}


# ------------------------------------------------------------------------------------------- Stable Diffusion


def build_sd21_base_random(folder: Path, seed: int = 0) -> Path:
    """The SD-2.1-base architecture (UNet, VAE, OpenCLIP-H text encoder) with random weights, in diffusers layout.
    The tokenizer is the tiny byte-level one (the vocabulary does not change the cost of a step)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_diffusion import _tiny_tokenizer, sd21_base_modules  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer(folder / "tokenizer")
    text_encoder, unet, vae = sd21_base_modules(tokenizer)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def build_sd_folder(architecture: str, folder: Path) -> Path:
    """The offline Stable Diffusion folder both methods load."""
    if architecture == "sd21-base":
        return build_sd21_base_random(folder)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_diffusion import build_tiny_stable_diffusion  # pylint: disable=import-outside-toplevel

    return build_tiny_stable_diffusion(folder, vae_downsample=8)


# ------------------------------------------------------------------------------------------------- generfacto


def patch_generfacto_for_local_fp32(sd_folder: Path, device: str) -> None:
    """Point generfacto's Stable Diffusion ids at `sd_folder`; on the CPU load and run it in fp32."""
    import diffusers
    import torch
    import torch.nn.functional as F
    from nerfstudio.generative import stable_diffusion as nsd

    for key in list(nsd.SD_IDENTIFIERS):
        nsd.SD_IDENTIFIERS[key] = str(sd_folder)
    if device != "cpu":
        return
    original = diffusers.StableDiffusionPipeline.from_pretrained.__func__

    def from_pretrained_fp32(cls, *args, **kwargs):
        kwargs["torch_dtype"] = torch.float32
        return original(cls, *args, **kwargs)

    diffusers.StableDiffusionPipeline.from_pretrained = classmethod(from_pretrained_fp32)

    def sds_loss_fp32(self, text_embeddings, image, guidance_scale=100.0, grad_scaler=None):
        # nerfstudio's StableDiffusion.sds_loss line for line, with the fp16 cast of the image removed.
        image = F.interpolate(image, (nsd.IMG_DIM, nsd.IMG_DIM), mode="bilinear")
        t = torch.randint(self.min_step, self.max_step + 1, [1], dtype=torch.long, device=self.device)
        latents = self.imgs_to_latent(image)
        with torch.no_grad():
            noise = torch.randn_like(latents)
            latents_noisy = self.scheduler.add_noise(latents, noise, t)
            latent_model_input = torch.cat((latents_noisy,) * 2)
            noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_text + guidance_scale * (noise_pred_text - noise_pred_uncond)
        w = 1 - self.alphas[t]
        grad = torch.nan_to_num(w * (noise_pred - noise))
        target = (latents - grad).detach()
        return 0.5 * F.mse_loss(latents, target, reduction="sum") / latents.shape[0]

    nsd.StableDiffusion.sds_loss = sds_loss_fp32


def generfacto_trainer(sd_folder: Path, device: str, output_dir: Path):
    from nerfstudio.configs.method_configs import method_configs

    from single_image_nerf.method_configs import headless

    patch_generfacto_for_local_fp32(sd_folder, device)
    config = headless(method_configs["generfacto"], device, output_dir)
    config.mixed_precision = device != "cpu"
    pipeline = config.pipeline
    pipeline.datamanager.train_resolution = RENDER_SIZE
    model = pipeline.model
    model.prompt = PROMPT
    model.diffusion_model = "stablediffusion"
    model.sd_version = "2-1"
    model.num_proposal_samples_per_ray = PROPOSAL_SAMPLES
    model.num_nerf_samples_per_ray = FIELD_SAMPLES
    model.implementation = "torch"
    return config


# ------------------------------------------------------------------------------------------------------- ours


def ours_trainer(sd_folder: Path, device: str, output_dir: Path, encoder: str):
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_folder
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    data = write_reference_folder(get_known_object("box"), output_dir / "box", ReferenceView(size=128))
    config = headless(coarse_trainer_config(), device, output_dir)
    pipeline = config.pipeline
    pipeline.datamanager.data = data
    pipeline.datamanager.novel_views.resolution = RENDER_SIZE
    model = pipeline.model
    model.implementation = "torch"  # tiny-cuda-nn is not what is compared
    model.num_proposal_samples_per_ray = PROPOSAL_SAMPLES
    model.num_nerf_samples_per_ray = FIELD_SAMPLES
    pipeline.guidance = StableDiffusionGuidanceConfig(model_path=str(sd_folder), prompt=PROMPT, encoder=encoder,
                                                      resolution=512, use_learned_token=False)
    return config


# ------------------------------------------------------------------------------------------------------ timing


def peak_memory_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_steps(trainer, device: str, start_step: int, warmup: int, steps: int, profile: bool) -> List[List[float]]:
    """(wall, process CPU) seconds per training step (callbacks, forward, backward, optimiser), after `warmup`
    untimed steps. CPU time is the steadier figure on a shared machine (with one thread it counts our work only,
    not the time spent waiting for a core)."""
    import torch
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    def one(step: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return [time.perf_counter() - start, time.process_time() - cpu_start]

    trainer.pipeline.train()
    for step in range(start_step, start_step + warmup):
        one(step)
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with torch_profile(activities=activities) as prof:
            one(start_step + warmup)
        key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), file=sys.stderr)
    return [one(step) for step in range(start_step + warmup + profile, start_step + warmup + profile + steps)]


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    output_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    variant = args.worker
    if variant.startswith("generfacto"):
        config = generfacto_trainer(args.sd_folder, args.device, output_dir)
        if variant == "generfacto-kept-heap":  # the allocator setting our CPU training makes, given to generfacto too
            from single_image_nerf.cpu_allocator import keep_freed_memory

            keep_freed_memory()
    else:
        config = ours_trainer(args.sd_folder, args.device, output_dir, encoder=variant.split("-")[1])
        config.pipeline.model.shading_start = 1.0 if variant.endswith("albedo") else 0.0
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    timings = time_steps(trainer, args.device, args.start_step, args.warmup, args.steps, args.profile)
    print(json.dumps({"variant": variant, "seconds": [wall for wall, _ in timings],
                      "cpu_seconds": [cpu for _, cpu in timings], "peak_gib": peak_memory_gib(args.device)}))


def run_variant(variant: str, args: argparse.Namespace) -> Dict:
    command = [sys.executable, __file__, "--worker", variant, "--sd-folder", str(args.sd_folder), "--device",
               args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--start-step",
               str(args.start_step), "--threads", str(args.threads)] + (["--profile"] if args.profile else [])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-4000:]}")
    if args.profile:
        print(done.stderr[-12000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda; default: cuda when available")
    parser.add_argument("--sd-architecture", choices=("tiny", "sd21-base"), default="tiny")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--start-step", type=int, default=1000, help="step number of the first step")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per variant (0: torch's default). On a shared machine 1 thread gives "
                             "stable timings: oversubscribed OpenMP threads slow every op down by up to 30x")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step each")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sd-folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="sd-") as folder:
        args.sd_folder = build_sd_folder(args.sd_architecture, Path(folder) / "sd")
        results = {variant: run_variant(variant, args) for variant in args.variants.split(",")}
    print_table(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": args.device, "sd_architecture": args.sd_architecture,
                                         "results": results}, indent=2) + "\n")


def print_table(results: Dict[str, Dict], args: argparse.Namespace) -> None:
    print(f"device {args.device}, {args.sd_architecture} Stable Diffusion, {RENDER_SIZE}x{RENDER_SIZE} renders, "
          f"samples {PROPOSAL_SAMPLES}/{FIELD_SAMPLES}, {args.steps} timed steps from step "
          f"{args.start_step + args.warmup}, torch threads {args.threads or 'default'}")
    base = results.get("generfacto")
    base_ms = 1000 * statistics.median(base["seconds"]) if base else None
    base_cpu = 1000 * statistics.median(base["cpu_seconds"]) if base else None
    print(f"| {'variant':<52} | median ms/step | min ms/step | median CPU ms/step | peak GiB | time vs generfacto "
          f"| CPU vs generfacto |")
    print(f"|{'-' * 54}|---------------:|------------:|-------------------:|---------:|-------------------:"
          f"|------------------:|")
    for variant, result in results.items():
        median = 1000 * statistics.median(result["seconds"])
        cpu = 1000 * statistics.median(result["cpu_seconds"])
        ratio = f"{median / base_ms:.2f}" if base_ms else "n/a"
        cpu_ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "n/a"
        print(f"| {VARIANTS[variant]:<52} | {median:14.0f} | {1000 * min(result['seconds']):11.0f} | {cpu:18.0f} | "
              f"{result['peak_gib']:8.2f} | {ratio:>18} | {cpu_ratio:>17} |")


if __name__ == "__main__":
    main()
