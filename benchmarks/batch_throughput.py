"""Throughput of `sin-batch` at tiny sizes: objects per hour with 1 and 2 objects in flight, and Ray's share of the
wall time.

Each setting runs `sin-batch --tiny --guidance none` as a user would (a fresh local Ray instance, the real commands)
on N synthetic RGBA photos (no downloads: the photo's alpha as the mask, no depth, a given caption, no prior) into a
fresh output folder, then reads the store. Ray's share counts what Ray adds around the commands: starting and
stopping the local instance, and for every task the time from its submission to the start of its command plus the
time from the command's end to the driver's record of it (a worker to start or reuse, the result to travel back),
divided by the objects in flight since those overlap. The rest of the wall time is the commands themselves (mostly
each command's Python start-up and imports at tiny sizes) and the driver's own start.

    .venv/bin/python benchmarks/batch_throughput.py --objects 4 --concurrency 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, count: int) -> Path:
    """`count` RGBA discs of different colours and a JSONL manifest giving each a caption."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        size = 96
        yy, xx = np.mgrid[:size, :size].astype(np.float32)
        inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.3 * size) ** 2
        colour = np.array([(53 * index) % 255, (97 * index + 80) % 255, (151 * index + 160) % 255], np.float32)
        image = np.zeros((size, size, 4), np.uint8)
        image[..., :3] = np.clip(colour * (0.5 + 0.5 * xx / size)[..., None], 0, 255).astype(np.uint8)
        image[..., 3] = np.where(inside, 255, 0)
        path = folder / f"object{index:03d}.png"
        Image.fromarray(image).save(path)
        rows.append(json.dumps({"image": path.name, "caption": f"a coloured disc number {index}"}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def measure(manifest: Path, out: Path, concurrent: int, steps: int) -> dict:
    """Run one batch and summarise it from its store."""
    command = [str(Path(sys.executable).parent / "sin-batch"), str(manifest), "--output", str(out), "--tiny",
               "--guidance", "none", "--mask-from", "alpha", "--no-depth", "--steps", str(steps),
               "--max-concurrent", str(concurrent), "--quiet"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"sin-batch failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    with sqlite3.connect(str(out / "batch.sqlite")) as conn:
        conn.row_factory = sqlite3.Row
        stages = [dict(row) for row in conn.execute("SELECT * FROM stages")]
        run = dict(conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone())
    objects = len({row["name"] for row in stages})
    overheads = [(row["started_at"] - row["submitted_at"]) + (row["recorded_at"] - row["finished_at"])
                 for row in stages]
    commands = sum(row["seconds"] for row in stages)
    ray_time = run["ray_start_s"] + run["ray_stop_s"] + sum(overheads) / concurrent
    by_stage = {}
    for row in stages:
        by_stage.setdefault(row["stage"], []).append(row["seconds"])
    return {
        "concurrent": concurrent, "objects": objects, "wall_s": wall, "objects_per_hour": objects / wall * 3600.0,
        "ray_start_s": run["ray_start_s"], "ray_stop_s": run["ray_stop_s"],
        "task_overhead_ms": 1000.0 * float(np.mean(overheads)), "ray_share": ray_time / wall,
        "commands_s": commands, "stage_mean_s": {k: float(np.mean(v)) for k, v in by_stage.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=4, help="photos per batch (default 4)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="objects in flight (default 1 2)")
    parser.add_argument("--steps", type=int, default=6, help="coarse steps (refine takes half; default 6)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="batch-throughput-"))
    manifest = write_photos(work / "photos", args.objects)
    results = []
    for concurrent in args.concurrency:
        results.append(measure(manifest, work / f"out-{concurrent}", concurrent, args.steps))
        print(f"[batch_throughput] {concurrent} in flight: {results[-1]['wall_s']:.0f} s", file=sys.stderr)
    print(f"{os.cpu_count()} CPUs, {args.objects} objects, tiny sizes, {args.steps} coarse steps, no prior\n")
    print("| objects in flight | wall (s) | objects/hour | Ray start + stop (s) | overhead per task (ms) "
          "| Ray's share |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['concurrent']} | {r['wall_s']:.0f} | {r['objects_per_hour']:.1f} | "
              f"{r['ray_start_s']:.1f} + {r['ray_stop_s']:.1f} | {r['task_overhead_ms']:.0f} | "
              f"{100 * r['ray_share']:.1f}% |")
    stages = list(results[0]["stage_mean_s"])
    print("\nmean seconds per stage (inside the task):\n")
    print("| objects in flight | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for r in results:
        print(f"| {r['concurrent']} | " + " | ".join(f"{r['stage_mean_s'][s]:.1f}" for s in stages) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
