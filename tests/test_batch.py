"""`sin-batch` on a real local Ray instance, running the real commands at the demo's tiny sizes on a CPU.

One batch of three objects is run once for the module: `mug` with every default (the default prior, caption and
depth models, served as users get them by tests/served_models.py), `ball` with per-object overrides (caption, no
prior, 4 steps, no depth) and `broken`, a file that is not a photo. Its driver is killed with SIGKILL while mug's
coarse stage is training (after its first checkpoint), then the same command is run again and finishes the batch.
The tests read what that left: two objects done and one failed with its line, the overrides in the runs'
config.yml, the killed stage resumed from its checkpoint and every earlier stage untouched, then a rerun that runs
nothing, Ray failing to start over the finished catalogue (nothing of it lost), a rerun with --retry-failed that
runs only the failed stage, and a changed option refused. The commands are given as long as they make progress
(STALL_S), so that a loaded machine slows the tests down without failing them.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_probe import gcs_calls
from served_models import served_environment
from single_image_nerf.batch.driver import LOCAL_RAY_NOTICE
from single_image_nerf.batch.manifest import read_manifest
from single_image_nerf.batch.stages import STAGES, ObjectPlan, run_stage
from single_image_nerf.inputs import checkpoint_steps
from single_image_nerf.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
SIN_BATCH = str(Path(sys.executable).parent / "sin-batch")
MANIFEST = """image,name,caption,guidance,steps,depth
photos/mug.png,mug,,,,
photos/ball.png,ball,a blue ball,none,4,false
photos/broken.jpg,broken,,,,
"""
STEPS = 40
"""Coarse steps of the objects without an override (a window of several checkpoints in which to kill the driver)."""
ROW_KEYS = ("status", "attempts", "error", "submitted_at", "started_at", "finished_at", "recorded_at", "seconds",
            "resumed_from")
STALL_S = 600
"""Seconds a sin-batch command may go without progress (no file under its output written or grown) before the
tests take it as hung. They wait on progress, not on the wall clock: on a loaded 2-core machine the batch takes
several times as long as on a quiet one, while a stage that works writes its log, checkpoints or outputs within
seconds to a minute or two (Ray's start-up, a model's loading)."""
RAY_START_FAILED = "sin-batch: error: cannot start a local Ray instance"
"""The line of a Ray start-up failure (on a loaded machine: Ray's own start-up timeout); it says to rerun."""


def write_disc(path: Path, colour, size: int = 96) -> Path:
    """An RGBA photo: a shaded disc of `colour` on a transparent background (its alpha is the object's mask)."""
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    inside = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.3 * size) ** 2
    shade = 0.5 + 0.5 * cols / size
    image = np.zeros((size, size, 4), np.uint8)
    image[..., :3] = np.clip(np.asarray(colour, np.float32)[None, None] * shade[..., None], 0, 255).astype(np.uint8)
    image[..., 3] = np.where(inside, 255, 0)
    Image.fromarray(image).save(path)
    return path


def stage_rows(out: Path) -> dict:
    """(object, stage) -> the row's bookkeeping columns, read from the store as another process would."""
    with sqlite3.connect(f"file:{out / 'batch.sqlite'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {(r["name"], r["stage"]): {k: r[k] for k in ROW_KEYS} for r in conn.execute("SELECT * FROM stages")}


def descendants(pid: int) -> dict:
    """Every process below `pid` (from /proc), with its command line."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                try:
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    found[child] = ""
                todo.append(child)
    return found


def alive(pids) -> set:
    living = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def outputs_of(out: Path, name: str) -> list:
    """The object's files that are not logs or event files, relative and with the object's name taken out."""
    root = out / name
    return sorted(re.sub(r"step-\d+", "step-N", str(p.relative_to(root)).replace(name, "NAME"))
                  for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and "events.out" not in p.name
                  and not p.name.startswith("."))


def progress(out: Path) -> tuple:
    """What changes while a batch works: the count, total size and newest modification time of the files under
    `out` (stage logs, checkpoints, outputs, the store)."""
    count, size, newest = 0, 0, 0
    for path in out.rglob("*") if out.is_dir() else ():
        try:
            stat = path.stat()
        except OSError:  # renamed or removed while listed
            continue
        count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return count, size, newest


class Watch:
    """Notices when `out` stops changing: `stalled()` is true once nothing under it changed for STALL_S seconds."""

    def __init__(self, out: Path) -> None:
        self.out, self.mark, self.since = out, progress(out), time.monotonic()
        self.looked = self.since

    def stalled(self) -> bool:
        if time.monotonic() - self.looked < 2.0:  # listing the folder is not free: every two seconds at most
            return False
        self.looked = time.monotonic()
        mark = progress(self.out)
        if mark != self.mark:
            self.mark, self.since = mark, time.monotonic()
        return time.monotonic() - self.since > STALL_S


def run_batch(command, out: Path, **options) -> subprocess.CompletedProcess:
    """Run a sin-batch command to its end for as long as it makes progress under `out` (see STALL_S); a run whose
    Ray failed to start (its line says to rerun) is run again, as a user would, at most twice more."""
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)
        watch = Watch(out)
        while True:
            try:
                stdout, stderr = process.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                if watch.stalled():
                    process.kill()
                    stdout, stderr = process.communicate()
                    raise AssertionError(f"sin-batch made no progress in {out} for {STALL_S} s:\n{stdout[-3000:]}"
                                         f"\n{stderr[-3000:]}")
        if not stderr.startswith(RAY_START_FAILED):
            break
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    work = tmp_path_factory.mktemp("batch")
    (work / "photos").mkdir()
    write_disc(work / "photos" / "mug.png", (220, 70, 50))
    write_disc(work / "photos" / "ball.png", (50, 90, 230))
    (work / "photos" / "broken.jpg").write_text("this is not a photo")
    (work / "manifest.csv").write_text(MANIFEST)
    out = work / "out"
    env = dict(os.environ, PYTHONWARNINGS="ignore", **served_environment(work / "cache"))
    command = [SIN_BATCH, str(work / "manifest.csv"), "--output", str(out), "--tiny", "--steps", str(STEPS),
               "--max-concurrent", "2", "--quiet"]
    checkpoints = out / "mug" / "runs" / "mug" / "single-image-nerf" / "batch" / "nerfstudio_models"

    def start():
        return subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)

    driver, starts, watch = start(), 1, Watch(out)
    below, seen_step, exposure = {}, None, None
    try:
        while not watch.stalled():
            if driver.poll() is not None:
                said = driver.stdout.read().decode()
                assert RAY_START_FAILED in said and starts < 3, \
                    "sin-batch ended before mug's coarse stage saved a checkpoint:\n" + said
                driver, starts = start(), starts + 1  # Ray did not start (a loaded machine): rerun, as its line says
                continue
            exposure = exposure or gcs_calls([driver.pid, *descendants(driver.pid)])  # the local Ray, running
            steps = checkpoint_steps(checkpoints)
            if steps and steps[-1] < STEPS - 1:  # mid-stage: a checkpoint, and steps still to train
                below.update(descendants(driver.pid))
                os.kill(driver.pid, signal.SIGKILL)
                seen_step = steps[-1]
                break
            time.sleep(0.05)
        assert seen_step is not None, "no checkpoint of mug's coarse stage before its last step was seen"
        driver.wait(timeout=30)
        at_kill = stage_rows(out)
        deadline = time.time() + 120
        # The Ray workers running the stages and the stages' commands die with the driver (Ray's own agents exit
        # by themselves when they find their raylet gone, more slowly).
        stages = {pid for pid, line in below.items() if "ray::stage_task" in line or str(out) in line}
        assert any(str(out) in line and "ns-train" in line for line in below.values()), below
        while alive(stages) and time.time() < deadline:
            time.sleep(0.5)
        survivors = {pid: below[pid] for pid in alive(stages)}
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in alive(below):
            os.kill(pid, signal.SIGKILL)
    resumed = run_batch(command, out, cwd=work, env=env)
    return {"work": work, "out": out, "env": env, "command": command, "seen_step": seen_step, "at_kill": at_kill,
            "survivors": survivors, "resumed": resumed, "after": stage_rows(out), "exposure": exposure}


def test_two_objects_done_and_the_bad_photo_fails_with_its_line(batch):
    out, after, resumed = batch["out"], batch["after"], batch["resumed"]
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # 1: an object failed
    for name in ("mug", "ball"):
        assert [after[(name, stage)]["status"] for stage in STAGES] == ["done"] * len(STAGES), (name, after)
    broken = [after[("broken", stage)] for stage in STAGES]
    assert broken[0]["status"] == "failed" and all(row["status"] == "pending" for row in broken[1:])
    error = broken[0]["error"]
    assert error.startswith("preprocess: error: ") and "not an image" in error and "\n" not in error, error
    assert "2 done, 1 failed, 0 unfinished (of 3 objects)" in resumed.stdout
    assert error in resumed.stdout

    import trimesh
    from plyfile import PlyData

    for name in ("mug", "ball"):
        exports = out / name / "exports"
        mesh = trimesh.load(exports / f"{name}-mesh.glb", force="mesh")
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
        splat = PlyData.read(str(exports / f"{name}-splat.ply"))["vertex"]
        assert splat.count > 0 and {"x", "y", "z", "opacity"} <= {p.name for p in splat.properties}
        with Image.open(exports / f"{name}-turntable.gif") as gif:
            assert gif.size == (32, 32)
    index = (out / "index.html").read_text()
    for link in ("mug/exports/mug-mesh.glb", "ball/exports/ball-splat.ply", "ball/exports/ball-turntable.gif",
                 "mug/data/rgba.png", "index_files/meshes/mug.js", "index_files/meshes/ball.js"):
        assert f'"{link}"' in index
        assert (out / link).is_file(), link
    assert "not an image" in index


def test_a_local_batch_says_what_listens_and_its_ray_wants_the_runs_token(batch):
    """Ray cannot keep its servers on loopback (they listen on every interface), so a local batch runs Ray with
    token authentication and a token of its own: the GCS server refuses a call without it or with another."""
    exposure, resumed = batch["exposure"], batch["resumed"]
    assert resumed.stdout.splitlines()[:len(LOCAL_RAY_NOTICE)] == list(LOCAL_RAY_NOTICE), resumed.stdout[:2000]
    assert exposure is not None, "no listening gcs_server was seen below the driver"
    assert exposure["codes"] == {"none": "UNAUTHENTICATED", "wrong": "UNAUTHENTICATED", "run": "OK"}, exposure
    assert exposure["mode"] == "token" and re.fullmatch(r"[0-9a-f]{64}", exposure["token"]), exposure["mode"]
    default_token = Path.home() / ".ray" / "auth_token"
    assert not default_token.is_file() or default_token.read_text().strip() != exposure["token"]
    assert "RAY_AUTH_TOKEN" not in batch["env"]


def test_per_object_overrides_reach_the_runs(batch):
    out = batch["out"]

    def config(name: str, method: str) -> str:
        return (out / name / "runs" / name / method / "batch" / "config.yml").read_text()

    def top_level_steps(text: str) -> int:
        return int(next(line for line in text.splitlines() if line.startswith("max_num_iterations:")).split()[1])

    def guidance(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("  guidance: ")).split("!!python/object:")[1]

    assert top_level_steps(config("ball", "single-image-nerf")) == 4
    assert top_level_steps(config("ball", "single-image-refine")) == 2
    assert top_level_steps(config("mug", "single-image-nerf")) == STEPS
    assert top_level_steps(config("mug", "single-image-refine")) == STEPS // 2
    assert guidance(config("ball", "single-image-nerf")).endswith("NoGuidanceConfig")
    assert guidance(config("ball", "single-image-refine")).endswith("NoGuidanceConfig")
    assert "StableDiffusion" in guidance(config("mug", "single-image-nerf"))  # the project's default prior
    assert "StableDiffusion" in guidance(config("mug", "single-image-refine"))
    assert (out / "ball" / "data" / "caption.txt").read_text().strip() == "a blue ball"
    assert (out / "mug" / "data" / "caption.txt").read_text().strip()  # from the default captioning model
    assert (out / "mug" / "data" / "depth.npy").is_file()  # from the default depth model
    assert not (out / "ball" / "data" / "depth.npy").exists()


def test_driver_killed_mid_stage_resumes_from_the_checkpoint(batch):
    out, at_kill, after = batch["out"], batch["at_kill"], batch["after"]
    assert not batch["survivors"], f"stage processes of the killed driver still running: {batch['survivors']}"
    assert at_kill[("mug", "coarse")]["status"] == "running"
    # Every stage done before the kill was left alone; the interrupted one ran again from its checkpoint.
    for key, row in at_kill.items():
        if row["status"] == "done":
            assert after[key] == row, key
    coarse = after[("mug", "coarse")]
    assert coarse["attempts"] == 2 and coarse["resumed_from"] >= batch["seen_step"] >= 1
    assert "Resuming at step" in (out / "mug" / "logs" / "coarse.log").read_text()
    assert checkpoint_steps(out / "mug" / "runs" / "mug" / "single-image-nerf" / "batch" / "nerfstudio_models") \
        == [STEPS - 1]
    # The same outputs as the object that was never interrupted, and nothing half-written left behind.
    assert [p for p in outputs_of(out, "mug") if not p.startswith("data")] == \
        [p for p in outputs_of(out, "ball") if not p.startswith("data")]
    for name in ("mug", "ball"):
        assert not [p for folder in ("data", "exports") for p in (out / name / folder).rglob("*")
                    if "partial" in p.name]
        assert not [p for p in (out / name).iterdir() if "partial" in p.name]


def test_a_training_stage_with_its_final_checkpoint_on_disk_is_not_run_again(batch):
    """A stage killed after its trainer wrote the final checkpoint (before the driver recorded it) is complete."""
    out = batch["out"]
    with sqlite3.connect(f"file:{out / 'batch.sqlite'}?mode=ro", uri=True) as conn:
        plan = ObjectPlan.from_json(conn.execute("SELECT plan FROM objects WHERE name = 'mug'").fetchone()[0])
    log = out / "mug" / "logs" / "coarse.log"
    before = log.read_text()
    result = run_stage("coarse", plan, out)
    assert result["ok"] and result["returncode"] is None and result["resumed_from"] == STEPS - 1, result
    added = log.read_text()[len(before):]
    assert "nothing left to train" in added and "ns-train" not in added


def test_rerun_runs_nothing(batch):
    out, before = batch["out"], stage_rows(batch["out"])
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".glb", ".ply", ".gif",
                                                                                              ".ckpt", ".png")}
    rerun = run_batch(batch["command"], out, cwd=batch["work"], env=batch["env"])
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert "nothing to run" in rerun.stdout
    assert stage_rows(out) == before
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_ray_failing_to_start_leaves_the_catalogue_as_it_was(batch):
    """Ray's own start-up failure (its temporary folder under a file) on a batch with a failed stage to retry: one
    line, and the catalogue (store rows, index page, every object's files) as it was; the next test's retry then
    resumes from it."""
    out, before = batch["out"], stage_rows(batch["out"])
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*")
             if p.is_file() and not p.name.startswith("batch.sqlite") and not p.name.startswith(".")}
    env = dict(batch["env"], RAY_TMPDIR=str(out / "index.html" / "ray"))
    failed = subprocess.run(batch["command"] + ["--retry-failed"], cwd=batch["work"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 2 and failed.stderr.startswith(RAY_START_FAILED), failed.stderr[-3000:]
    assert failed.stderr.strip().count("\n") == 0 and "rerun the same command to resume" in failed.stderr
    assert stage_rows(out) == before
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == files


def test_retry_failed_runs_only_the_failed_stage(batch):
    out, before = batch["out"], stage_rows(batch["out"])
    retry = run_batch(batch["command"] + ["--retry-failed"], out, cwd=batch["work"], env=batch["env"])
    assert retry.returncode == 1, retry.stdout + retry.stderr
    after = stage_rows(out)
    assert after[("broken", "preprocess")]["attempts"] == before[("broken", "preprocess")]["attempts"] + 1
    assert after[("broken", "preprocess")]["status"] == "failed"
    assert {k: v for k, v in after.items() if k[0] != "broken"} == {k: v for k, v in before.items() if k[0] != "broken"}


def test_changed_options_are_refused_in_one_line(batch):
    before = stage_rows(batch["out"])
    command = [arg if arg != str(STEPS) else str(STEPS + 1) for arg in batch["command"]]
    changed = run_batch(command, batch["out"], cwd=batch["work"], env=batch["env"])
    assert changed.returncode == 2
    assert changed.stderr.strip().count("\n") == 0
    assert f"'mug' was started with other options (steps: {STEPS} -> {STEPS + 1}" in changed.stderr
    assert stage_rows(batch["out"]) == before


def test_without_ray_it_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from single_image_nerf.scripts.batch import main; "
            f"sys.exit(main([{str(tmp_path)!r}, '--output', {str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == ('sin-batch needs Ray, an optional extra: pip install -e ".[batch]" '
                                     '(or: pip install "ray>=2.9")')
    assert not (tmp_path / "out").exists()


def test_manifests_read_rows_with_their_overrides(tmp_path):
    write_disc(tmp_path / "a.png", (200, 0, 0))
    write_disc(tmp_path / "b c.png", (0, 200, 0))
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "prompt": "a red disc", "steps": 7}\n\n'
                                      '# a comment\n{"image": "b c.png", "name": "green", "depth": false, '
                                      '"mask_from": "alpha", "refine_steps": 3}\n')
    rows = read_manifest(str(tmp_path / "m.jsonl"))
    assert [(r.name, Path(r.image).name) for r in rows] == [("a", "a.png"), ("green", "b c.png")]
    assert rows[0].overrides() == {"prompt": "a red disc", "steps": 7}
    assert rows[1].overrides() == {"depth": False, "mask_from": "alpha", "refine_steps": 3}
    assert [r.name for r in read_manifest(str(tmp_path))] == ["a", "b-c"]
    assert [r.name for r in read_manifest(str(tmp_path / "*.png"))] == ["a", "b-c"]

    bad = {"image,colour\na.png,red\n": "unknown column 'colour'",
           "image,steps\na.png,-2\n": "steps must be a positive integer",
           "caption\nhello\n": "no image given",
           "image,name\na.png,x\nb c.png,x\n": "two objects are named 'x'",
           "image,mask_from\na.png,magic\n": "mask_from must be one of"}
    for text, message in bad.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(UserInputError, match=message) as caught:
            read_manifest(str(tmp_path / "bad.csv"))
        assert "\n" not in str(caught.value)


def test_a_bad_manifest_stops_the_command_in_one_line_before_ray_starts(tmp_path):
    (tmp_path / "m.csv").write_text("image,steps\nnowhere.png,many\n")
    result = subprocess.run([SIN_BATCH, str(tmp_path / "m.csv"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 2
    assert result.stderr.strip() == \
        f"sin-batch: error: {tmp_path / 'm.csv'}:2: steps must be a positive integer, got 'many'"
    assert not (tmp_path / "out").exists()


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tmp_path):
    import socket

    write_disc(tmp_path / "mug.png", (200, 80, 40))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the command runs: nothing listens there
    start = time.perf_counter()
    result = subprocess.run([SIN_BATCH, str(tmp_path / "mug.png"), "--output", str(tmp_path / "out"), "--address",
                             f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode != 0 and time.perf_counter() - start < 60
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"no Ray cluster answers at --address 127.0.0.1:{port}" in lines[0], result.stderr
