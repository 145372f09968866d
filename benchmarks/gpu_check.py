#!/usr/bin/env python
"""The whole chain, photo to every export, timed stage by stage, with one JSON report and a short table.

    python benchmarks/gpu_check.py                       # on CUDA: real default sizes, SD-2.1-base at random weights
    python benchmarks/gpu_check.py --device cpu --tiny   # the same code at the smallest sizes (a check in a minute)

tools/gpu_check.sh runs it after installing the project from carried wheels and running `pytest -m gpu`; run alone,
it uses whatever environment it is started in.

The prior is the Stable Diffusion 2.1-base architecture at random weights (the real model's compute, nothing to
download), saved in the diffusers layout to a temporary folder and passed as the prior's `model_path`, so it is
loaded through the same `from_pretrained` calls as the real weights. `--tiny` uses the tiny random pipeline of
tests/tiny_diffusion.py instead. Stages, in the order a user runs them:

  preprocess   the photo's alpha, or GrabCut (no weights), recentred at the default 512 px; a given caption
  coarse       `single-image-nerf` at the default sizes through nerfstudio's Trainer: albedo steps, then shaded ones
  gpu_recipe   the zero123 recipe's GPU budget, stage by stage (12 views a step at 64 px, 4 at 128, 2 at 256), a few
               coarse steps each with the prior at Zero123's 256 px: step time and peak memory per stage, and the
               recipe's time to a mesh projected from them
  mesh         `sin-export-mesh` of the coarse run (default 256³ marching cubes, vertex colours)
  refine       `single-image-refine` seeded from the coarse run
  splat        `ns-export gaussian-splat` of the refine run
  turntable    `sin-render-turntable` of the refine run (default 60 frames of 256 px, GIF)

Steps are timed one by one (CUDA synchronised around each) and reported per stage and phase as medians after the
first steps of each phase; the UNet's forward calls are clocked inside the coarse steps, and the prior's own compute
(encoder forward and backward, UNet with classifier-free guidance) is timed apart with benchmarks/guidance_step.py's
functions. The runs use fewer steps than the defaults (`--coarse-steps`, `--refine-steps`; half of the coarse steps
are albedo steps so that both phases are measured); the report also projects the time from photo to every export at
the default step counts from the measured step times. A stage that fails is recorded with its error and the later
stages that do not need it still run; the exit status is 1 when any stage failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

STAGES = ("preprocess", "coarse", "mesh", "refine", "splat", "turntable")
EXPORTS = ("mesh", "splat", "turntable")
DEFAULT_COARSE_STEPS = 5000
"""The coarse stage's default length (method_configs.coarse_trainer_config)."""
DEFAULT_REFINE_STEPS = 2000
"""The refine stage's default length (method_configs.refine_trainer_config)."""
CAPTION = "a cup of coffee on a saucer"
SCHEMA = 1

# The smallest sizes (those of tools/demo.sh --tiny): a check of the chain, not of its speed.
TINY = {
    "preprocess_size": 64,
    "coarse_steps": 6,
    "refine_steps": 3,
    "coarse": {"datamanager.dataparser.image_size": 32, "datamanager.train_num_rays_per_batch": 256,
               "datamanager.novel_views.resolution": 16, "model.implementation": "torch", "model.num_levels": 8,
               "model.max_res": 128, "model.log2_hashmap_size": 14, "model.num_proposal_samples_per_ray": (32,),
               "model.num_nerf_samples_per_ray": 24},
    "refine": {"model.seed_num_points": 300, "model.seed_grid_resolution": 32, "model.seed_density_level": 1.0,
               "datamanager.novel_views.resolution": 16},
    "mesh": {"resolution": 32, "level": 1.0},
    "turntable": {"frames": 4, "resolution": 32},
}


# ---------------------------------------------------------------------------------------------------- helpers


def set_path(config: Any, dotted: str, value: Any) -> None:
    """`config.a.b.c = value` for dotted = 'a.b.c'."""
    *parents, name = dotted.split(".")
    for parent in parents:
        config = getattr(config, parent)
    if not hasattr(config, name):
        raise AttributeError(f"{type(config).__name__} has no field {name}")
    setattr(config, name, value)


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:500] if text else type(error).__name__


class Clock:
    """Wall time with CUDA synchronised at both ends, and the stage's peak memory."""

    def __init__(self, device) -> None:
        self.device = device

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float:
        """Peak CUDA memory allocated since the last reset; on a CPU the process's peak resident size."""
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase_summary(durations_ms: List[float], unet_ms: List[float], skip: int) -> Dict[str, Any]:
    """Median and mean of a phase's steps after its first `skip` ones (warm-up: kernel selection, caches)."""
    kept = durations_ms[skip:] if len(durations_ms) > skip else durations_ms
    kept_unet = unet_ms[skip:] if len(unet_ms) > skip else unet_ms
    median = statistics.median(kept)
    summary = {"steps": len(durations_ms), "timed_steps": len(kept), "first_step_ms": durations_ms[0],
               "median_ms": median, "mean_ms": statistics.fmean(kept), "min_ms": min(kept)}
    if unet_ms:
        unet = statistics.median(kept_unet)
        summary.update({"unet_ms": unet, "unet_share": unet / median if median > 0 else 0.0})
    return summary


# ---------------------------------------------------------------------------------------------------- the prior


def save_sd21_base(folder: Path, device, dtype) -> Path:
    """The SD-2.1-base architecture at random weights (benchmarks' builder) saved in the diffusers layout."""
    import torch
    from diffusers import DDPMScheduler
    from tiny_diffusion import _tiny_tokenizer, sd21_base_modules  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(folder / "tokenizer")
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute of CPU time
        text_encoder, unet, vae = sd21_base_modules(tokenizer)
    model_index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
                   "feature_extractor": [None, None], "safety_checker": [None, None],
                   "requires_safety_checker": False, "scheduler": ["diffusers", "DDPMScheduler"],
                   "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                   "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    for name, module in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        module.to(dtype).save_pretrained(folder / name)
        del module
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  clip_sample=False, prediction_type="epsilon").save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))
    return folder


def build_prior(folder: Path, tiny: bool, device) -> Dict[str, Any]:
    import torch

    if tiny:
        from tiny_diffusion import build_tiny_stable_diffusion  # pylint: disable=import-outside-toplevel

        build_tiny_stable_diffusion(folder, vae_downsample=2)
        architecture = "tiny"
    else:
        save_sd21_base(folder, device, torch.float16 if device.type == "cuda" else torch.float32)
        architecture = "sd21-base"
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return {"architecture": architecture, "weights": "random", "folder_mib": size / 2**20}


class PartsRecorder:
    """Keeps what the guidance's loader returns (the text encoder is needed to time the prior apart)."""

    def __init__(self) -> None:
        from single_image_nerf.guidance import loading

        self.parts = None
        self._loading = loading
        self._original = loading.load_stable_diffusion

        def recording(*args, **kwargs):
            self.parts = self._original(*args, **kwargs)
            return self.parts

        loading.load_stable_diffusion = recording

    def close(self) -> None:
        self._loading.load_stable_diffusion = self._original


def prior_compute(guide, parts, views: int, render: int, device, repeats: int) -> Dict[str, Any]:
    """The prior's own cost per step (no field): guidance_step's rows for the guidance's own encoder."""
    from guidance_step import Timer, guidance_rows  # pylint: disable=import-outside-toplevel

    timer = Timer(device, repeats, 1)
    args = types.SimpleNamespace(views=views, render=render, encoders=[guide.encoder])
    rows, totals = guidance_rows(guide, parts, args, timer)
    parts_ms = {label: ms for label, ms in rows}

    def find(prefix: str) -> float:
        return next(ms for label, ms in parts_ms.items() if label.startswith(prefix))

    encoder = guide.encoder
    return {
        "encoder": encoder, "latent_size": guide.latent_size, "resolution": guide.resolution,
        "views": views, "render_px": render, "dtype": str(guide.dtype).replace("torch.", ""),
        "encode_forward_ms": find(f"encoder {encoder}:"),
        "encode_backward_ms": next(ms for label, ms in parts_ms.items()
                                   if label.startswith(f"encoder {encoder}: backward")),
        "unet_cfg_ms": find("UNet with CFG"),
        "score_overhead_ms": find("score around the UNet"),
        "total_ms": totals[encoder],
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------------- the stages


def preprocess(photo: Path, output: Path, size: int) -> Dict[str, Any]:
    from PIL import Image

    from single_image_nerf.preprocess.pipeline import preprocess_image

    with Image.open(photo) as image:
        has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
    mask = "alpha" if has_alpha else "grabcut"
    preprocess_image(photo, output, size=size, mask_from=mask, depth=False, caption_text=CAPTION, progress=False,
                     overwrite=True)
    return {"mask": mask, "size": size, "folder": str(output)}


def train_stage(config, clock: Clock, phase_of: Callable[[int], str], on_setup: Callable[[Any], None],
                skip: int) -> Dict[str, Any]:
    """Set up nerfstudio's Trainer as ns-train does, run its steps one by one with their callbacks, time each step
    (and the UNet's forward calls inside it), save the final checkpoint."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation
    from guidance_step import ModuleClock  # pylint: disable=import-outside-toplevel

    config.set_timestamp()
    config.save_config()
    start = time.perf_counter()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    setup_s = time.perf_counter() - start
    on_setup(trainer)
    guide = trainer.pipeline.guidance
    unet_clock = ModuleClock(guide.unet, clock) if guide is not None and hasattr(guide, "unet") else None
    steps = config.max_num_iterations
    durations: Dict[str, List[float]] = {}
    unet: Dict[str, List[float]] = {}
    trainer.pipeline.train()
    for step in range(steps):
        if unet_clock is not None:
            unet_clock.reset()
        clock.sync()
        begin = time.perf_counter()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        clock.sync()
        phase = phase_of(step)
        durations.setdefault(phase, []).append(1000.0 * (time.perf_counter() - begin))
        if unet_clock is not None:
            unet.setdefault(phase, []).append(unet_clock.total_ms)
    start = time.perf_counter()
    trainer.save_checkpoint(steps - 1)
    save_s = time.perf_counter() - start
    phases = {name: phase_summary(values, unet.get(name, []), skip) for name, values in durations.items()}
    pipeline = trainer.pipeline
    result = {"steps": steps, "setup_s": setup_s, "checkpoint_s": save_s, "phases": phases,
              "skipped_steps": int(getattr(pipeline, "skipped_steps", 0)),
              "config": str(config.get_base_dir() / "config.yml"), "_trainer": trainer}
    model = pipeline.model
    if hasattr(model, "num_points"):
        result["num_gaussians"] = int(model.num_points)
    return result


def gpu_recipe(args, data: Path, runs: Path, prior: Path, clock: Clock, skip: int) -> Dict[str, Any]:
    """Each stage of the zero123 recipe's GPU budget (views a step, render size) trained for --recipe-steps coarse
    steps on its own, the check's prior (the SD 2.1 UNet; Zero123's is the same UNet with 8 input channels) at
    Zero123's 256 px (--tiny: an eighth of each size, the prior's own): the median step time, the peak memory, and the
    stage's steps in the recipe's run."""
    from single_image_nerf.guidance import recipes
    from single_image_nerf.run_length import step_at

    budget = recipes.COARSE_RECIPES["zero123"].budget(recipes.GPU_BUDGET)
    views, sizes, starts, run = (budget[key].value for key in ("views_per_step", "novel_resolution", "stage_starts",
                                                                "run_steps"))
    bounds = [0, *(step_at(start, run) for start in starts), run]
    stages = []
    for index, (count, side) in enumerate(zip(views, sizes)):
        config = stage_config("coarse", args, runs / f"gpu-recipe-{index}", prior)
        config.max_num_iterations = args.recipe_steps
        config.pipeline.datamanager.data = data
        novel = config.pipeline.datamanager.novel_views
        novel.views_per_step, novel.resolution, novel.stage_starts = (count,), (side // 8 if args.tiny else side,), ()
        if not args.tiny:
            config.pipeline.guidance.resolution = 256  # Zero123's native size: 32x32 latents
        clock.reset_peak()
        result = train_stage(config, clock, lambda step: "all", lambda trainer: None, skip)
        del result["_trainer"]
        stages.append({"views": count, "resolution": novel.resolution[0], "recipe_steps": bounds[index + 1] - bounds[index],
                       "median_ms": result["phases"]["all"]["median_ms"], "setup_s": result["setup_s"],
                       "peak_memory_mib": clock.peak_mib()})
        _release(clock)
    training_s = sum(entry["recipe_steps"] * entry["median_ms"] for entry in stages) / 1000.0
    return {"recipe": "zero123", "source": budget["views_per_step"].source, "run_steps": run, "stages": stages,
            "projected_training_s": training_s}


def projected_gpu_recipe(report: Dict[str, Any]) -> Optional[float]:
    """Seconds from photo to mesh with the zero123 GPU recipe: preprocessing, the first stage's set-up, the recipe's
    steps of each stage at its measured median, and the mesh export."""
    stages = report["stages"]
    recipe = stages.get("gpu_recipe", {})
    parts = [stages.get("preprocess", {}).get("seconds"), stages.get("mesh", {}).get("seconds")]
    if recipe.get("status") != "ok" or any(part is None for part in parts):
        return None
    return sum(parts) + recipe["stages"][0]["setup_s"] + recipe["projected_training_s"]


def stage_config(stage: str, args, runs: Path, prior: Path):
    """A headless trainer config of `stage` ("coarse" or "refine") with the prior at `prior`, no saves or evals
    during the timed steps, and the tiny sizes with --tiny."""
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
    from single_image_nerf.method_configs import coarse_trainer_config, headless, refine_trainer_config

    build, steps = (coarse_trainer_config, args.coarse_steps) if stage == "coarse" else (refine_trainer_config,
                                                                                          args.refine_steps)
    config = headless(build(max_steps=steps), args.device, runs)
    config.experiment_name = "coffee"
    config.steps_per_save = config.steps_per_eval_image = config.steps_per_eval_batch = 1_000_000
    config.steps_per_eval_all_images = 1_000_000
    config.pipeline.guidance = StableDiffusionGuidanceConfig(model_path=str(prior))
    for path, value in (TINY[stage] if args.tiny else {}).items():
        set_path(config.pipeline, path, value)
    return config


def coarse_config(args, data: Path, runs: Path, prior: Path):
    config = stage_config("coarse", args, runs, prior)
    config.pipeline.datamanager.data = data
    config.pipeline.model.shading_start = args.albedo_steps / args.coarse_steps
    return config


def refine_config(args, coarse: Path, runs: Path, prior: Path):
    config = stage_config("refine", args, runs, prior)
    config.pipeline.model.coarse_config = coarse
    return config


EXPORTER_ONLY = ("open3d", "pymeshlab", "mediapy")
"""Modules nerfstudio's exporter module imports at its top that `gaussian-splat` never calls (point clouds, Poisson
meshes, textures): open3d is a 400 MB wheel, pymeshlab 100 MB, and mediapy needs IPython at import."""


def stand_in_exporter_only_modules() -> List[str]:
    """Empty modules for those of EXPORTER_ONLY that are not installed (so that the exporter module imports); returns
    their names."""
    import importlib.util

    missing = [name for name in EXPORTER_ONLY if name not in sys.modules and importlib.util.find_spec(name) is None]
    for name in missing:
        sys.modules[name] = types.ModuleType(name)
    return missing


def export_splat(config: Path, exports: Path) -> Dict[str, Any]:
    stand_ins = stand_in_exporter_only_modules()
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    ExportGaussianSplat(load_config=config, output_dir=exports).main()
    return {"files": [str(exports / "splat.ply")], "stand_in_modules": stand_ins}


# ------------------------------------------------------------------------------------------------------ report


def imported_distributions() -> List[Dict[str, str]]:
    """The installed distributions whose top-level modules this process imported, with where each came from."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    names = sorted({dist for module in list(sys.modules) if "." not in module for dist in owners.get(module, [])})
    found = []
    for name in names:
        try:
            dist = metadata.distribution(name)
            found.append({"name": name, "version": dist.version, "location": str(dist.locate_file(""))})
        except metadata.PackageNotFoundError:
            continue
    return found


def read_setup(path: Optional[Path]) -> Dict[str, Any]:
    """tools/gpu_check.sh's key=value lines (seconds as numbers), with pytest's JUnit XML read into counts."""
    setup: Dict[str, Any] = {"install_s": None, "extension_mode": None, "extension_s": None, "pytest": None}
    if path is None or not path.exists():
        return setup
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    for key in ("install_s", "extension_s"):
        if key in values:
            setup[key] = float(values[key])
    setup["extension_mode"] = values.get("extension_mode")
    if "pytest_rc" in values:
        pytest = {"exit_status": int(values["pytest_rc"]), "seconds": float(values.get("pytest_s", "nan"))}
        junit = Path(values.get("pytest_junit", ""))
        if junit.is_file():
            import xml.etree.ElementTree as ElementTree

            suites = ElementTree.parse(junit).getroot()
            suites = [suites] if suites.tag == "testsuite" else list(suites.iter("testsuite"))
            counts = {key: sum(int(suite.get(key, 0)) for suite in suites)
                      for key in ("tests", "failures", "errors", "skipped")}
            pytest.update(counts)
            pytest["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
            pytest["not_passed"] = [f"{case.get('classname')}::{case.get('name')}: {child.tag}"
                                    for suite in suites for case in suite.iter("testcase")
                                    for child in case if child.tag in ("failure", "error", "skipped")]
        setup["pytest"] = pytest
    return setup


def versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    import torch

    found: Dict[str, Optional[str]] = {"python": platform.python_version(), "torch": torch.__version__,
                                       "cuda": torch.version.cuda}
    for name in ("nerfstudio", "diffusers", "transformers", "huggingface_hub", "gsplat", "numpy", "single-image-nerf"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def projected(report: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Seconds from photo to each export at the default step counts: the measured non-step times plus the median
    step times of each phase times the default number of steps in it."""
    stages = report["stages"]

    def training_s(stage: str, default_steps: int, split: Dict[str, int]) -> Optional[float]:
        entry = stages.get(stage, {})
        if entry.get("status") != "ok":
            return None
        phases = entry["phases"]
        measured_steps = sum(phase["steps"] * phase["mean_ms"] for phase in phases.values()) / 1000.0
        fixed = entry["seconds"] - measured_steps
        per_phase = {name: phases[name]["median_ms"] for name in phases}
        total = 0.0
        for name, count in split.items():
            total += count * per_phase.get(name, statistics.fmean(per_phase.values())) / 1000.0
        return fixed + total if default_steps else None

    albedo = min(report["settings"]["default_albedo_steps"], DEFAULT_COARSE_STEPS)
    coarse = training_s("coarse", DEFAULT_COARSE_STEPS, {"albedo": albedo, "shaded": DEFAULT_COARSE_STEPS - albedo})
    refine = training_s("refine", DEFAULT_REFINE_STEPS, {"all": DEFAULT_REFINE_STEPS})
    pre = stages.get("preprocess", {}).get("seconds")
    out: Dict[str, Optional[float]] = {}
    if pre is None or coarse is None:
        return {name: None for name in EXPORTS}
    mesh = stages.get("mesh", {}).get("seconds")
    out["mesh"] = pre + coarse + mesh if mesh is not None else None
    # The refine run follows the mesh export in this chain; a user may also start it first.
    after_coarse = pre + coarse + (mesh or 0.0)
    for name in ("splat", "turntable"):
        seconds = stages.get(name, {}).get("seconds")
        out[name] = after_coarse + refine + seconds if refine is not None and seconds is not None else None
    if out["splat"] is not None and out["turntable"] is not None:
        out["turntable"] += stages["splat"]["seconds"]
    return out


def table(report: Dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [f"GPU check on {report['device_name']} ({report['device']}{', tiny sizes' if report['tiny'] else ''}), "
             f"prior {report['prior']['architecture']} at random weights"]
    if setup.get("install_s") is not None:
        lines.append(f"install from wheels: {setup['install_s']:.1f} s")
    if setup.get("extension_s") is not None:
        lines.append(f"gsplat CUDA extension {setup['extension_mode']}: {setup['extension_s']:.1f} s")
    if setup.get("pytest"):
        test = setup["pytest"]
        lines.append(f"pytest -m gpu: {test.get('passed', '?')} passed, {test.get('failures', '?')} failed, "
                     f"{test.get('errors', '?')} errors, {test.get('skipped', '?')} skipped in {test['seconds']:.1f} s "
                     f"(exit status {test['exit_status']})")
    lines += ["", "| stage | phase | steps | median ms/step | UNet share | seconds | peak MiB | status |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name in STAGES:
        entry = report["stages"].get(name, {})
        status = entry.get("status", "not run")
        seconds = f"{entry['seconds']:.1f}" if "seconds" in entry else ""
        peak = f"{entry['peak_memory_mib']:.0f}" if "peak_memory_mib" in entry else ""
        phases = entry.get("phases") or {"": None}
        for phase, summary in phases.items():
            if summary is None:
                lines.append(f"| {name} | | | | | {seconds} | {peak} | {status} |")
                continue
            share = f"{summary['unet_share']:.2f}" if "unet_share" in summary else ""
            lines.append(f"| {name} | {phase} | {summary['steps']} | {summary['median_ms']:.1f} | {share} | "
                         f"{seconds} | {peak} | {status} |")
    prior = report.get("prior_compute") or {}
    if prior:
        lines += ["", f"prior alone per step ({prior['encoder']} encoder, {prior['dtype']}): encoder forward "
                  f"{prior['encode_forward_ms']:.1f} ms + backward {prior['encode_backward_ms']:.1f} ms, UNet with CFG "
                  f"{prior['unet_cfg_ms']:.1f} ms, around it {prior['score_overhead_ms']:.1f} ms; total "
                  f"{prior['total_ms']:.1f} ms; shaded coarse step / prior = "
                  f"{report['coarse_step_over_prior'] or float('nan'):.2f}"]
    recipe = report["stages"].get("gpu_recipe", {})
    if recipe.get("status") == "ok":
        lines += ["", f"GPU recipe ({recipe['recipe']}: {recipe['source']}), {recipe['run_steps']} steps; photo to mesh "
                  f"projected: {report['projected_gpu_recipe_to_mesh_s'] or float('nan'):.1f} s",
                  "| views a step | px | steps in the recipe | median ms/step | peak MiB |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {entry['views']} | {entry['resolution']} | {entry['recipe_steps']} | {entry['median_ms']:.1f} | "
                  f"{entry['peak_memory_mib']:.0f} |" for entry in recipe["stages"]]
    seconds = report["photo_to_export_s"]
    projected_s = report["projected_photo_to_export_s"]
    lines += ["", "| export | photo to export, this run (s) | at the default steps, projected (s) |", "|---|---:|---:|"]
    for name in EXPORTS:
        measured = "" if seconds.get(name) is None else f"{seconds[name]:.1f}"
        projection = "" if projected_s.get(name) is None else f"{projected_s[name]:.1f}"
        lines.append(f"| {name} | {measured} | {projection} |")
    lines += ["", f"peak GPU memory: {report['peak_gpu_memory_mib']:.0f} MiB" if report["peak_gpu_memory_mib"]
              is not None else "peak GPU memory: (no GPU)", "files written:"]
    lines += [f"  {item['path']} ({item['bytes']:,} bytes)" for item in report["files"]]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="the smallest sizes and the tiny random prior")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check_outputs", help="folder of the report and runs")
    parser.add_argument("--photo", type=Path, default=ROOT / "demo" / "coffee.jpg")
    parser.add_argument("--coarse-steps", type=int, default=None, help="coarse steps (default 60; --tiny 6)")
    parser.add_argument("--refine-steps", type=int, default=None, help="refine steps (default 40; --tiny 3)")
    parser.add_argument("--prior-repeats", type=int, default=None, help="timed calls of the prior alone (default 5)")
    parser.add_argument("--recipe-steps", type=int, default=None,
                        help="coarse steps of each GPU recipe stage (default 8; --tiny 2)")
    parser.add_argument("--setup", type=Path, default=None,
                        help="key=value lines of the set-up steps (install, extension build, pytest) for the report")
    args = parser.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    args.coarse_steps = args.coarse_steps or (TINY["coarse_steps"] if args.tiny else 60)
    args.refine_steps = args.refine_steps or (TINY["refine_steps"] if args.tiny else 40)
    if args.coarse_steps < 2 or args.refine_steps < 1:
        parser.error("--coarse-steps must be at least 2 and --refine-steps at least 1")
    args.albedo_steps = args.coarse_steps // 2
    args.recipe_steps = args.recipe_steps or (2 if args.tiny else 8)
    args.prior_repeats = args.prior_repeats or (2 if args.tiny else 5)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    from single_image_nerf.guidance.recipes import COARSE_RECIPES

    device = torch.device(args.device)
    clock = Clock(device)
    out = args.out.resolve()
    for sub in ("data", "outputs", "exports"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    exports = out / "exports"
    exports.mkdir()
    report: Dict[str, Any] = {
        "schema": SCHEMA, "device": device.type, "tiny": args.tiny,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": versions(), "setup": read_setup(args.setup),
        "settings": {"coarse_steps": args.coarse_steps, "albedo_steps": args.albedo_steps,
                     "refine_steps": args.refine_steps, "default_coarse_steps": DEFAULT_COARSE_STEPS,
                     "default_refine_steps": DEFAULT_REFINE_STEPS,
                     "default_albedo_steps": round(COARSE_RECIPES["stable-diffusion"].settings["shading_start"].value
                                                   * DEFAULT_COARSE_STEPS), "photo": str(args.photo)},
        "stages": {},
    }
    prior_folder = Path(tempfile.mkdtemp(prefix="gpu-check-prior-"))
    recorder = PartsRecorder()
    start = time.perf_counter()
    try:
        report["prior"] = build_prior(prior_folder / "sd", args.tiny, device)
        report["prior"]["build_s"] = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.empty_cache()
        run_chain(args, report, clock, out, prior_folder / "sd", recorder)
    finally:
        recorder.close()
        shutil.rmtree(prior_folder, ignore_errors=True)
    report["imported_distributions"] = imported_distributions()
    report["ok"] = all(report["stages"].get(name, {}).get("status") == "ok" for name in (*STAGES, "gpu_recipe"))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = table(report)
    (out / "table.md").write_text(text)
    print(text, end="")
    print(f"report: {out / 'report.json'}")
    return 0 if report["ok"] else 1


def run_chain(args, report: Dict[str, Any], clock: Clock, out: Path, prior: Path, recorder: PartsRecorder) -> None:
    stages = report["stages"]
    exports = out / "exports"
    done_at: Dict[str, float] = {}
    elapsed = [0.0]  # seconds of the chain's stages so far (the prior's build and its separate timing excluded)

    def stage(name: str, function: Callable[[], Dict[str, Any]], needs: tuple = ()) -> Optional[Dict[str, Any]]:
        missing = [need for need in needs if stages.get(need, {}).get("status") != "ok"]
        if missing:
            stages[name] = {"status": "not run", "error": f"needs {', '.join(missing)}"}
            return None
        print(f"[gpu-check] {name} ...", flush=True)
        clock.reset_peak()
        clock.sync()
        begin = time.perf_counter()
        try:
            result = function()
        except Exception as error:  # noqa: BLE001  (record the stage's failure; the later stages still run)
            clock.sync()
            stages[name] = {"status": "failed", "seconds": time.perf_counter() - begin, "error": one_line(error),
                            "traceback": traceback.format_exc()[-4000:]}
            print(f"[gpu-check] {name} failed: {one_line(error)}", flush=True)
            return None
        clock.sync()
        seconds = time.perf_counter() - begin
        elapsed[0] += seconds
        done_at[name] = elapsed[0]
        entry = {"status": "ok", "seconds": seconds, "peak_memory_mib": clock.peak_mib()}
        entry.update({key: value for key, value in result.items() if not key.startswith("_")})
        stages[name] = entry
        print(f"[gpu-check] {name} done in {entry['seconds']:.1f} s", flush=True)
        return result

    data = out / "data" / "coffee"
    runs = out / "outputs"
    size = TINY["preprocess_size"] if args.tiny else 512
    stage("preprocess", lambda: preprocess(args.photo, data, size))

    skip = 1 if args.tiny else 3
    coarse_result = stage("coarse", lambda: train_stage(
        coarse_config(args, data, runs, prior), clock,
        lambda step: "albedo" if step < args.albedo_steps else "shaded", lambda trainer: None, skip),
        needs=("preprocess",))
    coarse_yml = Path(stages["coarse"]["config"]) if coarse_result else None

    report["prior_compute"] = None
    if coarse_result is not None and recorder.parts is not None:
        trainer = coarse_result["_trainer"]
        novel = trainer.pipeline.datamanager.config.novel_views
        try:
            report["prior_compute"] = prior_compute(trainer.pipeline.guidance, recorder.parts, novel.views_per_step[0],
                                                    novel.resolution[0], clock.device, args.prior_repeats)
        except Exception as error:  # noqa: BLE001
            report["prior_compute"] = None
            stages["coarse"]["prior_compute_error"] = one_line(error)
    if coarse_result is not None:
        del coarse_result["_trainer"]
    recorder.parts = None
    _release(clock)

    stage("gpu_recipe", lambda: gpu_recipe(args, data, runs, prior, clock, skip), needs=("preprocess",))
    _release(clock)

    def mesh() -> Dict[str, Any]:
        from single_image_nerf.scripts.export_mesh import ExportMeshConfig, export_mesh

        output = exports / "coffee.ply"
        options = TINY["mesh"] if args.tiny else {}
        result = export_mesh(ExportMeshConfig(load_config=coarse_yml, output=output, **options), announce=print)
        return {"files": [str(output)], "vertices": len(result.vertices), "faces": len(result.faces)}

    stage("mesh", mesh, needs=("coarse",))
    _release(clock)

    refine_result = stage("refine", lambda: train_stage(
        refine_config(args, coarse_yml, runs, prior), clock, lambda step: "all", lambda trainer: None, skip),
        needs=("coarse",))
    if refine_result is not None:
        del refine_result["_trainer"]
    _release(clock)
    refine_yml = Path(stages["refine"]["config"]) if refine_result else None

    stage("splat", lambda: export_splat(refine_yml, exports), needs=("refine",))

    def turntable() -> Dict[str, Any]:
        from single_image_nerf.scripts.render_turntable import TurntableConfig, render_turntable

        output = exports / "coffee.gif"
        options = TINY["turntable"] if args.tiny else {}
        frames = render_turntable(TurntableConfig(load_config=refine_yml, output=output, **options), announce=print)
        return {"files": [str(output)], "frames": int(frames.shape[0]), "resolution": int(frames.shape[1])}

    stage("turntable", turntable, needs=("refine",))

    # The chain's order: preprocess, coarse, mesh, refine, splat, turntable; seconds of its stages up to each export.
    report["photo_to_export_s"] = {name: done_at.get(name) for name in EXPORTS}
    report["projected_photo_to_export_s"] = projected(report)
    report["projected_gpu_recipe_to_mesh_s"] = projected_gpu_recipe(report)
    shaded = stages.get("coarse", {}).get("phases", {}).get("shaded")
    prior_total = (report.get("prior_compute") or {}).get("total_ms")
    report["coarse_step_over_prior"] = shaded["median_ms"] / prior_total if shaded and prior_total else None
    report["unet_share_of_coarse_step"] = {
        phase: summary.get("unet_share") for phase, summary in stages.get("coarse", {}).get("phases", {}).items()}
    peaks = [entry["peak_memory_mib"] for entry in stages.values() if "peak_memory_mib" in entry]
    report["peak_gpu_memory_mib"] = max(peaks) if peaks and clock.device.type == "cuda" else None
    files = [Path(path) for entry in stages.values() for path in entry.get("files", [])]
    files += sorted(path for path in (runs.rglob("*") if runs.exists() else []) if path.suffix in (".ckpt", ".yml"))
    report["files"] = [{"path": str(path), "bytes": path.stat().st_size} for path in files if path.exists()]


def _release(clock: Clock) -> None:
    import gc

    import torch

    gc.collect()
    if clock.device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
