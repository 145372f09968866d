#!/usr/bin/env python
"""Milliseconds per training step and peak memory of the coarse stage, at several render sizes and sample counts.

    python benchmarks/train_step.py                         # the default grid on the current device
    python benchmarks/train_step.py --resolutions 64 128 --samples 256,96,48 --steps 10 --device cuda
    python benchmarks/train_step.py --resolutions 64 --samples 128,64,32 --views-per-step 1 4

Each configuration runs in a fresh process through nerfstudio's Trainer (the `none` prior, so the figures are the
field's own cost): the reference batch has as many rays as a novel view has pixels, and each step renders
`--views-per-step` novel views at that resolution (one row per count). Peak memory is torch's allocator peak on CUDA, the process's peak resident size on CPU.
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
from typing import Dict, List, Tuple


def parse_samples(text: str) -> Tuple[Tuple[int, ...], int]:
    """'256,96,48' -> proposal samples (256, 96) and 48 field samples per ray."""
    numbers = tuple(int(part) for part in text.split(","))
    if len(numbers) < 2 or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"samples '{text}' must be positive proposal counts then the field count")
    return numbers[:-1], numbers[-1]


def write_disc(path: Path, size: int = 128) -> Path:
    """A two-coloured RGBA disc: any object works, the cost does not depend on the picture."""
    import numpy as np
    from PIL import Image

    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    inside = np.hypot(rows - size / 2, cols - size / 2) < 0.3 * size
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = np.where(cols < size / 2, 220, 40)
    rgba[..., 1] = 120
    rgba[..., 3] = inside * 255
    Image.fromarray(rgba).save(path)
    return path


def measure(resolution: int, samples: str, steps: int, warmup: int, device: str, implementation: str,
            views_per_step: int = 1) -> Dict:
    """Train `warmup + steps` steps of one configuration in this process; the timing of the last `steps`."""
    import torch

    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.method_configs import coarse_trainer_config, headless

    proposal, field_samples = parse_samples(samples)
    work = Path(tempfile.mkdtemp(prefix="train-step-"))
    config = headless(coarse_trainer_config(max_steps=warmup + steps), device, work / "outputs")
    config.steps_per_save = 1_000_000
    config.steps_per_eval_image = 1_000_000
    pipeline = config.pipeline
    pipeline.guidance = NoGuidanceConfig()
    pipeline.datamanager.data = write_disc(work / "disc.png")
    pipeline.datamanager.dataparser.image_size = resolution
    pipeline.datamanager.train_num_rays_per_batch = resolution * resolution
    pipeline.datamanager.novel_views.resolution = resolution
    pipeline.datamanager.novel_views.views_per_step = views_per_step
    pipeline.model.implementation = implementation
    pipeline.model.num_proposal_samples_per_ray = proposal
    pipeline.model.num_nerf_samples_per_ray = field_samples
    pipeline.model.shading_start = 0.0  # shaded steps: the costlier kind (normals through the field)
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    durations: List[float] = []
    for step in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.pipeline.train()
        trainer.train_iteration(step)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            durations.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"resolution": resolution, "samples": samples, "views": views_per_step, "median_ms": 1000 * statistics.median(durations),
            "min_ms": 1000 * min(durations), "peak_mib": peak, "device": device, "implementation": implementation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64], help="render sides in pixels")
    parser.add_argument("--samples", nargs="+", default=["64,32,24", "128,64,32", "256,96,48"],
                        help="proposal samples then field samples per ray, comma separated")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--implementation", choices=("tcnn", "torch"), default="tcnn",
                        help="hash-grid implementation (tcnn falls back to torch where tiny-cuda-nn is missing)")
    parser.add_argument("--views-per-step", type=int, nargs="+", default=[1],
                        help="novel views rendered per step (one row per count)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        resolution, samples, views = args.child.split(":")
        result = measure(int(resolution), samples, args.steps, args.warmup, args.device, args.implementation,
                         int(views))
        print("RESULT " + json.dumps(result))
        return
    for samples in args.samples:
        parse_samples(samples)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    rows = []
    configurations = [(resolution, samples, views) for resolution in args.resolutions for samples in args.samples
                      for views in args.views_per_step]
    for resolution, samples, views in configurations:
        command = [sys.executable, __file__, "--child", f"{resolution}:{samples}:{views}", "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device, "--implementation", args.implementation]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{resolution}px {samples} {views} views: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        row = rows[-1]
        print(f"{resolution:>4}px  samples {samples:<10}  {views} views  {row['median_ms']:9.0f} ms/step  "
              f"{row['peak_mib']:8.0f} MiB", flush=True)
    memory = "peak CUDA allocated" if args.device == "cuda" else "peak resident"
    print(f"\ncoarse stage, one reference batch (res² rays) + the novel views (res² each) per step, on {args.device}")
    print(f"| render | samples (proposal…, field) | novel views | median ms/step | min ms/step | {memory} MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['resolution']}² | {row['samples']} | {row['views']} | {row['median_ms']:.0f} | "
              f"{row['min_ms']:.0f} | {row['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
