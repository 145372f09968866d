"""tools/gpu_check.sh run on the CPU at the smallest sizes (`--device cpu --tiny`, the current environment), so that
the one-shot GPU check cannot rot: its report has every field, finite timings, and the exports it names exist."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("preprocess", "coarse", "mesh", "refine", "splat", "turntable")
EXPORTS = ("mesh", "splat", "turntable")
TOP_LEVEL = {"schema", "device", "tiny", "device_name", "versions", "setup", "settings", "stages", "prior",
             "prior_compute", "photo_to_export_s", "projected_photo_to_export_s", "coarse_step_over_prior",
             "unet_share_of_coarse_step", "peak_gpu_memory_mib", "files", "imported_distributions", "ok",
             "projected_gpu_recipe_to_mesh_s"}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--no-install",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, json.loads((out / "report.json").read_text()), result.stdout


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_stage_with_finite_timings(check):
    out, report, stdout = check
    assert TOP_LEVEL <= set(report), TOP_LEVEL - set(report)
    assert report["ok"] is True and report["device"] == "cpu" and report["tiny"] is True
    assert report["prior"]["architecture"] == "tiny" and finite(report["prior"]["build_s"])
    for name in STAGES:
        stage = report["stages"][name]
        assert stage["status"] == "ok", (name, stage.get("error"))
        assert finite(stage["seconds"]) and stage["seconds"] >= 0 and finite(stage["peak_memory_mib"]), name
    settings = report["settings"]
    coarse = report["stages"]["coarse"]
    assert set(coarse["phases"]) == {"albedo", "shaded"} and coarse["steps"] == settings["coarse_steps"]
    assert coarse["phases"]["albedo"]["steps"] == settings["albedo_steps"]
    assert sum(phase["steps"] for phase in coarse["phases"].values()) == settings["coarse_steps"]
    for phase in coarse["phases"].values():
        for key in ("first_step_ms", "median_ms", "mean_ms", "min_ms", "unet_ms", "unet_share"):
            assert finite(phase[key]) and phase[key] >= 0, key
        assert 0 < phase["unet_share"] < 1 and phase["min_ms"] <= phase["median_ms"]
    assert set(report["unet_share_of_coarse_step"]) == {"albedo", "shaded"}
    recipe = report["stages"]["gpu_recipe"]
    assert recipe["status"] == "ok" and [entry["views"] for entry in recipe["stages"]] == [12, 4, 2]
    assert sum(entry["recipe_steps"] for entry in recipe["stages"]) == recipe["run_steps"] == 600
    assert all(finite(entry["median_ms"]) and finite(entry["peak_memory_mib"]) for entry in recipe["stages"])
    assert finite(report["projected_gpu_recipe_to_mesh_s"]) and "GPU recipe (zero123" in stdout
    refine = report["stages"]["refine"]
    assert refine["phases"]["all"]["steps"] == settings["refine_steps"] and refine["num_gaussians"] > 0
    assert finite(refine["phases"]["all"]["median_ms"])
    prior = report["prior_compute"]
    for key in ("encode_forward_ms", "encode_backward_ms", "unet_cfg_ms", "score_overhead_ms", "total_ms"):
        assert finite(prior[key]) and prior[key] >= 0, key
    assert prior["encoder"] == "latent" and prior["unet_cfg_ms"] > 0  # the CPU's encoder; CUDA takes the VAE
    assert finite(report["coarse_step_over_prior"]) and report["coarse_step_over_prior"] > 0
    assert report["peak_gpu_memory_mib"] is None  # no GPU


@pytest.mark.slow
def test_tiny_cpu_run_times_photo_to_every_export_and_writes_them(check):
    out, report, stdout = check
    measured, projected = report["photo_to_export_s"], report["projected_photo_to_export_s"]
    assert set(measured) == set(projected) == set(EXPORTS)
    assert all(finite(measured[name]) and finite(projected[name]) for name in EXPORTS)
    assert measured["mesh"] < measured["splat"] < measured["turntable"]
    # The defaults run thousands of steps where the check ran a few: the projection is far longer.
    assert all(projected[name] > measured[name] for name in EXPORTS)
    files = {Path(item["path"]).name: item for item in report["files"]}
    for name in ("coffee.ply", "splat.ply", "coffee.gif"):
        assert name in files and files[name]["bytes"] > 0 and Path(files[name]["path"]).is_file(), name
    for item in report["files"]:
        assert Path(item["path"]).stat().st_size == item["bytes"] > 0
        assert Path(item["path"]).resolve().is_relative_to(out.resolve())
    checkpoints = [Path(item["path"]) for item in report["files"] if Path(item["path"]).suffix == ".ckpt"]
    recipe_runs = [path for path in checkpoints if any(part.startswith("gpu-recipe-") for part in path.parts)]
    assert len(checkpoints) - len(recipe_runs) == 2  # the coarse and refine runs
    assert len(recipe_runs) == len(report["stages"]["gpu_recipe"]["stages"])  # one run per GPU-recipe stage
    stages = report["stages"]
    assert stages["turntable"]["frames"] == 4 and stages["mesh"]["faces"] > 0
    imported = {item["name"].lower() for item in report["imported_distributions"]}
    assert {"nerfstudio", "diffusers", "torch", "single-image-nerf"} <= imported
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in STAGES) and "coffee.gif" in table and table in stdout


@pytest.mark.slow
def test_tiny_cpu_run_records_the_gpu_tests_of_its_set_up(check):
    out, report, _ = check
    setup = report["setup"]
    assert setup["install_s"] is None and setup["extension_s"] is None  # --no-install, and no CUDA extension on a CPU
    pytest_run = setup["pytest"]
    assert pytest_run["exit_status"] == 0 and finite(pytest_run["seconds"])
    marker = "pytest.mark." + "gpu"  # spelled apart: this file is no GPU test module
    gpu_tests = sum(marker in path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    assert gpu_tests >= 3 and pytest_run["tests"] >= 4
    assert pytest_run["failures"] == pytest_run["errors"] == 0
    assert pytest_run["passed"] + pytest_run["skipped"] == pytest_run["tests"]
    assert (out / "pytest-gpu.xml").is_file()


def test_phase_summary_leaves_out_the_warm_up_steps():
    from gpu_check import phase_summary

    summary = phase_summary([900.0, 100.0, 120.0, 110.0], [450.0, 50.0, 60.0, 55.0], skip=1)
    assert summary["first_step_ms"] == 900.0 and summary["timed_steps"] == 3
    assert summary["median_ms"] == 110.0 and summary["min_ms"] == 100.0 and summary["unet_ms"] == 55.0
    assert summary["unet_share"] == pytest.approx(0.5)
    assert phase_summary([5.0], [], skip=3)["median_ms"] == 5.0  # a phase shorter than its warm-up is kept


def test_help_and_bad_options_of_the_shell_script(tmp_path):
    script = str(ROOT / "tools" / "gpu_check.sh")
    shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--download" in shown.stdout and "--tiny" in shown.stdout
    bad = subprocess.run(["bash", script, "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option --frobnicate" in bad.stderr
    wheels = subprocess.run(["bash", script, "--wheels", "/nonexistent-wheels", "--device", "cpu", "--out",
                             str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHON="/bin/false"))
    assert wheels.returncode == 2 and "no wheels in /nonexistent-wheels" in wheels.stderr
