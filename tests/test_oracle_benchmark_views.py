"""benchmarks/oracle_recovery.py with several reference photos (`--views`) and no prior (`--guidance none`) at tiny
sizes: the run trains on the several-photo folder the benchmark writes, and no held-out view sits at a photo's
azimuth; photos cut alike (`--recentre shared`) give a run whose silhouettes match the true object's better than
photos cut each around its own object (`--recentre per-photo`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = [sys.executable, str(ROOT / "benchmarks" / "oracle_recovery.py")]


def start_benchmark(arguments, folder: Path) -> subprocess.Popen:
    """The benchmark running in `folder` (its temporary files there too)."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "TMPDIR": str(folder), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*BENCHMARK, *arguments], cwd=folder, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> str:
    """The benchmark's stdout once it has exited successfully."""
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def test_views_and_no_guidance_score_only_unphotographed_sides(tmp_path):
    report = tmp_path / "report.json"
    arguments = ["--object", "box", "--steps", "10", "--size", "24", "--novel-resolution", "16", "--num-views", "2",
                 "--eval-resolution", "16", "--threads", "1", "--device", "cpu", "--supersample", "1",
                 "--views", "0", "90", "--guidance", "none", "--json", str(report)]
    assert "guidance none, reference photos at 0 90" in finished(start_benchmark(arguments, tmp_path))
    scored = json.loads(report.read_text())["by_supersample"]["1"]
    held_out = [view["azimuth_offset"] for view in scored["views"] if view["name"] != "reference"]
    assert [round(offset) for offset in held_out] == [-90]  # the held-out view at +90 is the second photo's side
    assert scored["reference_azimuths"] == [0.0, 90.0]
    written = next(Path(tmp_path).glob("oracle-*/data/meta.json"))
    assert [view["azimuth_deg"] for view in json.loads(written.read_text())["views"]] == [0.0, 90.0]


def test_shared_recentring_matches_the_true_silhouettes_better_than_per_photo_recentring(tmp_path):
    # The box is 0.80 wide from 0 and 180 degrees but 0.64 from 90 and 270: cut around its own object, each of those
    # two photos is enlarged (its square is narrower), and the run cannot agree with both pairs. Both arms run at once.
    arguments = ["--object", "box", "--steps", "40", "--size", "24", "--photo-size", "48", "--novel-resolution", "8",
                 "--eval-resolution", "24", "--lr", "0.05", "--lr-final-ratio", "1", "--num-views", "8",
                 "--threads", "1", "--device", "cpu", "--supersample", "1", "--views", "0", "90", "180", "270",
                 "--guidance", "none"]
    arms = ("shared", "per-photo")
    processes = {arm: start_benchmark([*arguments, "--recentre", arm, "--json", str(tmp_path / f"{arm}.json")],
                                      tmp_path / arm) for arm in arms}
    outputs = {arm: finished(process) for arm, process in processes.items()}
    silhouettes = {arm: json.loads((tmp_path / f"{arm}.json").read_text())["silhouette"] for arm in arms}
    assert "silhouette IoU (per-photo recentring" in outputs["per-photo"]
    shared, per_photo = silhouettes["shared"], silhouettes["per-photo"]
    assert [round(view["azimuth_offset"], 1) for view in shared["held_out"]] == [
        22.5, 67.5, 112.5, 157.5, -157.5, -112.5, -67.5, -22.5]
    assert [view["azimuth"] for view in shared["reference"]] == [0.0, 90.0, 180.0, 270.0]
    # Measured 0.922 against 0.860 held-out; at the photos from 90 and 270, 0.96 against 0.65.
    assert shared["held_out_mean"] > per_photo["held_out_mean"] + 0.03
    for index in (1, 3):
        assert shared["reference"][index]["iou"] > per_photo["reference"][index]["iou"] + 0.2


def test_per_photo_recentring_needs_several_views(tmp_path):
    process = start_benchmark(["--views", "0", "--recentre", "per-photo"], tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "give two or more --views" in stderr
