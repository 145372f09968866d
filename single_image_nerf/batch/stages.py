"""The stages of one object, each run as the project's own console command in a child process: the same code paths
as typing the commands by hand (sin-preprocess, ns-train single-image-nerf, ns-train single-image-refine,
sin-export-mesh, ns-export gaussian-splat, sin-render-turntable).

Each stage writes only into its object's folder (OUT/<name>/): `data/` (preprocessing), `runs/` (the two training
runs, at the fixed timestamp `batch`), `exports/` (mesh .glb, splat .ply, turntable .gif) and `logs/<stage>.log`.
Preprocessing and exports write to a temporary name and are renamed into place only when the command succeeded, so
a half-written file never has the final name. Training resumes from the run's last checkpoint (`--load-dir`) when
one exists, so a stage that was killed continues where its trainer last saved (and one killed after its final
checkpoint is not started again). A stage is complete when its outputs are on disk (`missing_outputs`); the driver
records it as done only then.

The child dies with the process that started it (PR_SET_PDEATHSIG on Linux): a worker killed with SIGKILL takes its
command with it. Pure Python apart from the child processes: no torch, no Ray.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from single_image_nerf.batch.manifest import ObjectRow
from single_image_nerf.errors import UserInputError
from single_image_nerf.inputs import checkpoint_steps

STAGES = ("preprocess", "coarse", "refine", "mesh", "splat", "turntable")
"""The stages of every object, in order; each needs the ones before it."""
TIMESTAMP = "batch"
"""--timestamp of both training runs, so that a rerun finds (and resumes) the same run folders."""

PRIORS_READING_TEXT = ("stable-diffusion", "magic123")
"""The priors (`pipeline.guidance:<name>`) that read the object's text: a prompt, else the caption."""
PRIORS_WITHOUT_TEXT = ("zero123", "none", "oracle")
"""The priors that read no text: preprocessing runs no captioning model for them."""
DEFAULT_PRIOR = "stable-diffusion"
"""The prior of both training stages when neither --guidance nor the manifest names one (the methods' default)."""

TINY_PREPROCESS = ["--size", "64"]
TINY_COARSE = ["--pipeline.datamanager.dataparser.image-size", "32", "--pipeline.datamanager.train-num-rays-per-batch",
               "256", "--pipeline.datamanager.novel-views.resolution", "16", "--pipeline.model.implementation", "torch",
               "--pipeline.model.num-levels", "8", "--pipeline.model.max-res", "128",
               "--pipeline.model.log2-hashmap-size", "14", "--pipeline.model.num-proposal-samples-per-ray", "32",
               "--pipeline.model.num-nerf-samples-per-ray", "24"]
TINY_REFINE = ["--pipeline.model.seed-num-points", "300", "--pipeline.model.seed-grid-resolution", "32",
               "--pipeline.model.seed-density-level", "1.0", "--pipeline.datamanager.novel-views.resolution", "16"]
TINY_MESH = ["--resolution", "32", "--depth-views", "8", "--depth-resolution", "32", "--bake-views", "4",
             "--bake-resolution", "32", "--texture-size", "128"]
TINY_TURNTABLE = ["--frames", "4", "--resolution", "32"]
"""The sizes of `bash tools/demo.sh --tiny` (checks of the chain on a CPU)."""
TINY_STEPS = 6
TINY_STEPS_PER_SAVE = 2
"""Coarse steps at tiny sizes, and a checkpoint every 2 steps so that a killed tiny run has one to resume from."""


@dataclass(frozen=True)
class Settings:
    """The run-wide options of `sin-batch`; a manifest row overrides the per-object ones."""

    tiny: bool = False
    """The demo's tiny sizes."""
    steps: Optional[int] = None
    """Coarse steps (None: the method's, or TINY_STEPS)."""
    refine_steps: Optional[int] = None
    """Refine steps (None: half the coarse steps)."""
    guidance: Optional[str] = None
    """Prior of both training stages (None: DEFAULT_PRIOR)."""
    mask_from: str = "auto"
    """Foreground source of preprocessing."""
    depth: bool = True
    """Whether preprocessing estimates depth."""
    steps_per_save: Optional[int] = None
    """Checkpoint interval of the training stages."""
    caption: Optional[str] = None
    """Caption of every object that its manifest row does not caption (--caption TEXT)."""
    captioner: bool = True
    """Whether preprocessing may run the captioning model (False: --no-caption); it runs only where a prior reads
    the caption and neither a caption nor a prompt is given."""


@dataclass(frozen=True)
class ObjectPlan:
    """Everything that decides an object's outputs: its row resolved against the run's settings. Stored with the
    object; a rerun with another plan for the same object is refused rather than mixing two settings."""

    name: str
    image: str
    caption: Optional[str]
    prompt: Optional[str]
    guidance: Optional[str]
    steps: Optional[int]
    refine_steps: Optional[int]
    mask_from: str
    depth: bool
    tiny: bool
    steps_per_save: Optional[int]
    captioner: bool = True
    """Whether preprocessing runs the captioning model (no caption given, a prior that reads it, no prompt)."""
    extra_images: Tuple[str, ...] = ()
    """The object's other photos, after `image` (several photos of one object)."""
    azimuths: Optional[Tuple[float, ...]] = None
    """sin-preprocess --azimuths: one per photo (several photos)."""
    elevations: Optional[Tuple[float, ...]] = None
    """sin-preprocess --elevations: one per photo (several photos)."""

    def to_json(self) -> str:
        """The plan as stored; the several-photo fields only where set, so a one-photo plan reads as before."""
        return json.dumps({k: v for k, v in asdict(self).items() if k not in _VIEW_FIELDS or v}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ObjectPlan":
        values = json.loads(text)
        return cls(**{k: tuple(v) if k in _VIEW_FIELDS and v is not None else v for k, v in values.items()})


_VIEW_FIELDS = ("extra_images", "azimuths", "elevations")


def resolve(row: ObjectRow, settings: Settings) -> ObjectPlan:
    """The plan of one manifest row under the run's settings (the row wins where it sets something)."""
    steps = row.steps or settings.steps or (TINY_STEPS if settings.tiny else None)
    refine_steps = row.refine_steps or (settings.refine_steps if not row.steps else None)
    if refine_steps is None and steps is not None:
        refine_steps = max(steps // 2, 2)  # as the demo: refine takes half the coarse steps
    guidance = row.guidance if row.guidance is not None else settings.guidance
    prior = check_prior(guidance or DEFAULT_PRIOR, f"object {row.name!r}")
    if row.prompt is not None and guidance not in (None, "stable-diffusion"):
        raise UserInputError(f"object {row.name!r}: a prompt is for the stable-diffusion prior, not guidance "
                             f"{guidance!r}; drop one of them")
    caption = row.caption if row.caption is not None else settings.caption
    reads_caption = prior in PRIORS_READING_TEXT and row.prompt is None
    if reads_caption and caption is None and not settings.captioner:
        raise UserInputError(
            f"object {row.name!r}: the {prior} prior needs text and --no-caption leaves it none; give --caption TEXT "
            f"or a 'caption' or 'prompt' column, or choose a prior that reads no text ("
            f"--guidance {' | '.join(PRIORS_WITHOUT_TEXT)})")
    return ObjectPlan(
        name=row.name, image=row.image, caption=caption, prompt=row.prompt, guidance=guidance, steps=steps,
        refine_steps=refine_steps, mask_from=row.mask_from or settings.mask_from,
        depth=settings.depth if row.depth is None else row.depth, tiny=settings.tiny,
        steps_per_save=settings.steps_per_save or (TINY_STEPS_PER_SAVE if settings.tiny else None),
        captioner=reads_caption and caption is None,
        extra_images=row.extra_images, azimuths=row.azimuths, elevations=row.elevations,
    )


def caption_note(plans: List[ObjectPlan]) -> Optional[str]:
    """One line saying which objects preprocessing captions no image for, and why; None when every object has a
    caption or gets one from the captioning model."""
    skipped = [plan for plan in plans if plan.caption is None and not plan.captioner]
    if not skipped:
        return None
    silent = sorted({plan.guidance or DEFAULT_PRIOR for plan in skipped} & set(PRIORS_WITHOUT_TEXT))
    reasons = [f"the {', '.join(silent)} prior{'s' if len(silent) > 1 else ''} read{'' if len(silent) > 1 else 's'}"
               " no text"] if silent else []
    reasons += ["a prompt is given"] if any(plan.prompt is not None for plan in skipped) else []
    return (f"captions: no captioning model runs for {len(skipped)} of {len(plans)} object"
            f"{'s' if len(plans) > 1 else ''} ({'; '.join(reasons)})")


def check_prior(name: str, where: str) -> str:
    """`name` if it is a prior of the project; else one line listing them."""
    if name not in PRIORS_READING_TEXT + PRIORS_WITHOUT_TEXT:
        raise UserInputError(f"{where}: unknown prior {name!r}; choose one of "
                             f"{', '.join(PRIORS_READING_TEXT + PRIORS_WITHOUT_TEXT)}")
    return name


@dataclass(frozen=True)
class ObjectPaths:
    """Where an object's stages write, under OUT/<name>/."""

    root: Path

    @classmethod
    def of(cls, out: Path, name: str) -> "ObjectPaths":
        return cls(Path(out).resolve() / name)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, stage: str) -> Path:
        method = {"coarse": "single-image-nerf", "refine": "single-image-refine"}[stage]
        return self.runs / self.name / method / TIMESTAMP

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def mesh(self) -> Path:
        return self.exports / f"{self.name}-mesh.glb"

    @property
    def splat(self) -> Path:
        return self.exports / f"{self.name}-splat.ply"

    @property
    def turntable(self) -> Path:
        return self.exports / f"{self.name}-turntable.gif"

    def log(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    def outputs(self, stage: str) -> Dict[str, str]:
        """The files that make `stage` complete (name -> path)."""
        if stage == "preprocess":
            return {"data": str(self.data), "photo": str(self.data / "rgba.png")}
        if stage in ("coarse", "refine"):
            run = self.run(stage)
            return {"config": str(run / "config.yml"), "checkpoints": str(run / "nerfstudio_models")}
        return {stage: str(getattr(self, stage))}

    def temporary(self, stage: str) -> Path:
        """The name a stage writes to before its output is renamed into place."""
        if stage == "preprocess":
            return self.root / ".data.partial"
        if stage == "splat":
            return self.exports / ".splat.partial"
        final = getattr(self, stage)
        return final.with_name(f".partial-{final.name}")  # keeps the suffix: the commands pick the format by it


def configured_steps(config: Path) -> Optional[int]:
    """max_num_iterations of a run's config.yml (a top-level key), or None when it cannot be read."""
    try:
        match = re.search(r"^max_num_iterations: (\d+)$", config.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def missing_outputs(stage: str, paths: ObjectPaths) -> Optional[str]:
    """None when `stage`'s outputs are complete on disk, else what is missing (one line)."""
    if stage == "preprocess":
        photo = paths.data / "rgba.png"
        return None if photo.is_file() else f"{photo} is missing"
    if stage in ("coarse", "refine"):
        run = paths.run(stage)
        total = configured_steps(run / "config.yml")
        if total is None:
            return f"{run / 'config.yml'} is missing or unreadable"
        steps = checkpoint_steps(run / "nerfstudio_models")
        if not steps or steps[-1] < total - 1:
            return f"{run / 'nerfstudio_models'} has no checkpoint of the final step {total - 1}"
        return None
    final = getattr(paths, stage)
    return None if final.is_file() and final.stat().st_size > 0 else f"{final} is missing"


def _guidance_args(plan: ObjectPlan) -> List[str]:
    if plan.prompt is not None:
        return [f"pipeline.guidance:{plan.guidance or 'stable-diffusion'}", "--pipeline.guidance.prompt", plan.prompt]
    return [f"pipeline.guidance:{plan.guidance}"] if plan.guidance else []


def command(stage: str, plan: ObjectPlan, paths: ObjectPaths, device: str) -> List[str]:
    """The console command of `stage` for `plan` (program first), writing to the stage's temporary name."""
    if stage == "preprocess":
        argv = ["sin-preprocess", plan.image, *plan.extra_images, "--output", str(paths.temporary(stage)),
                "--mask-from", plan.mask_from, "--device", device, "--quiet"]
        argv += ["--azimuths", *map(str, plan.azimuths)] if plan.azimuths else []
        argv += ["--elevations", *map(str, plan.elevations)] if plan.elevations else []
        argv += TINY_PREPROCESS if plan.tiny else []
        argv += [] if plan.depth else ["--no-depth"]
        argv += ["--caption", plan.caption] if plan.caption is not None else [] if plan.captioner else ["--no-caption"]
        return argv
    if stage in ("coarse", "refine"):
        if stage == "coarse":
            argv = ["ns-train", "single-image-nerf", "--data", str(paths.data)]
            steps = plan.steps
            cpu = ["--pipeline.model.implementation", "torch"] if device == "cpu" else []  # the README's CPU run
            sizes = TINY_COARSE if plan.tiny else cpu
        else:
            argv = ["ns-train", "single-image-refine", "--pipeline.model.coarse-config",
                    str(paths.run("coarse") / "config.yml")]
            steps, sizes = plan.refine_steps, TINY_REFINE if plan.tiny else []
        argv += ["--output-dir", str(paths.runs), "--experiment-name", plan.name, "--timestamp", TIMESTAMP,
                 "--machine.device-type", device, "--vis", "tensorboard"]
        argv += ["--max-num-iterations", str(steps)] if steps else []
        argv += ["--steps-per-save", str(plan.steps_per_save)] if plan.steps_per_save else []
        argv += sizes
        checkpoints = paths.run(stage) / "nerfstudio_models"
        if checkpoint_steps(checkpoints):
            argv += ["--load-dir", str(checkpoints)]
        return argv + _guidance_args(plan)
    if stage == "mesh":
        argv = ["sin-export-mesh", "--load-config", str(paths.run("refine") / "config.yml"),  # the refined model
                "--output", str(paths.temporary(stage))]
        return argv + (TINY_MESH if plan.tiny else [])
    if stage == "splat":
        return ["ns-export", "gaussian-splat", "--load-config", str(paths.run("refine") / "config.yml"),
                "--output-dir", str(paths.temporary(stage))]
    if stage == "turntable":
        argv = ["sin-render-turntable", "--load-config", str(paths.run("refine") / "config.yml"),
                "--output", str(paths.temporary(stage))]
        return argv + (TINY_TURNTABLE if plan.tiny else [])
    raise ValueError(f"unknown stage {stage!r}")


def _program(name: str) -> str:
    """A console script of this interpreter's environment (a worker runs the commands installed beside it)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _die_with_parent(parent: int):
    """preexec_fn: SIGKILL this child when the process that started it dies (Linux), however it dies."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return setup


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


_COMMAND_PREFIX = re.compile(r"^[\w.-]+: (?=error: )")
"""The name a command puts before its `error:` (sin-preprocess: error: ...): the stage already names it."""


def error_line(log_text: str, returncode: int) -> str:
    """The one line that says why a command failed: its last `error:` line (without the command's name in front),
    else its last line, else its status."""
    lines = [" ".join(_ANSI.sub("", line).split()) for line in log_text.splitlines()]
    lines = [line.strip("│ ") for line in lines if line.strip("│─╭╮╰╯ ")]
    for line in reversed(lines):
        if "error:" in line.lower():
            return _COMMAND_PREFIX.sub("", line)
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1] if lines else f"exit status {returncode}"


def _finish(stage: str, paths: ObjectPaths) -> None:
    """Move a stage's temporary output to its final name (an atomic rename within one folder)."""
    if stage == "preprocess":
        _remove(paths.data)
        os.replace(paths.temporary(stage), paths.data)
    elif stage == "splat":
        written = paths.temporary(stage) / "splat.ply"
        if not written.is_file():
            raise FileNotFoundError(f"ns-export wrote no {written}")
        os.replace(written, paths.splat)
        _remove(paths.temporary(stage))
    elif stage in ("mesh", "turntable"):
        os.replace(paths.temporary(stage), getattr(paths, stage))


def _stage_result(stage: str, paths: ObjectPaths, started: float, resumed_from: Optional[int],
                  returncode: Optional[int], ok: bool = False) -> Dict[str, object]:
    """What `run_stage` returns, timed from `started` to now (the caller fills in "error" or sets "ok")."""
    finished = time.time()
    return {"ok": ok, "error": None, "started_at": started, "finished_at": finished, "seconds": finished - started,
            "outputs": paths.outputs(stage), "resumed_from": resumed_from, "host": socket.gethostname(),
            "returncode": returncode}


def run_stage(stage: str, plan: ObjectPlan, out: Path, device: str = "cpu",
              env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Run one stage of one object to completion and report it: ok, error (one line), timings, outputs, the step a
    training stage resumed from, the host. Never raises for a failing command: its error line is the result."""
    paths = ObjectPaths.of(out, plan.name)
    for folder in (paths.root, paths.exports, paths.log(stage).parent):
        folder.mkdir(parents=True, exist_ok=True)
    resumed_from = None
    started = time.time()
    log = paths.log(stage)
    if stage in ("coarse", "refine"):
        steps = checkpoint_steps(paths.run(stage) / "nerfstudio_models")
        resumed_from = steps[-1] if steps else None
        if missing_outputs(stage, paths) is None:
            # Killed after its final checkpoint: the run is complete (and the trainer has no step left to resume).
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: the final "
                             f"checkpoint (step {resumed_from}) is on disk; nothing left to train\n")
            return _stage_result(stage, paths, started, resumed_from, returncode=None, ok=True)
    else:
        _remove(paths.temporary(stage))  # left by an attempt that was killed
    argv = command(stage, plan, paths, device)
    argv[0] = _program(argv[0])
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "ab") as handle:
        offset = handle.tell()
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                     f"{subprocess.list2cmdline(argv)}\n".encode())
        handle.flush()
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=child_env, cwd=str(paths.root), preexec_fn=_die_with_parent(os.getpid()))
        try:
            returncode = process.wait()
        finally:
            if process.poll() is None:  # interrupted (cancelled task, Ctrl-C): the command goes too
                process.kill()
                process.wait()
    result = _stage_result(stage, paths, started, resumed_from, returncode)
    if returncode != 0:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
        result["error"] = f"{stage}: {error_line(text, returncode)}"
        return result
    try:
        _finish(stage, paths)
    except OSError as error:
        result["error"] = f"{stage}: {error}"
        return result
    missing = missing_outputs(stage, paths)
    if missing:
        result["error"] = f"{stage}: the command succeeded but {missing}"
        return result
    result["ok"] = True
    return result
