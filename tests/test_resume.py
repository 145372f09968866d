"""Reliability: a real `ns-train` killed with SIGKILL leaves a usable last checkpoint and resumes at its step; a
training process killed while it writes a checkpoint leaves the last complete one, loadable, and nothing that passes
for a checkpoint; a non-finite loss, or non-finite gradients from a finite loss, skip the step and leave the weights
as they were."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from single_image_nerf.trainer import checkpoint_steps
from tiny_training import tiny_config, write_ball_image

TINY_FLAGS = [
    "--machine.device-type", "cpu", "--vis", "tensorboard", "--pipeline.datamanager.dataparser.image-size", "32",
    "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.datamanager.novel-views.resolution", "16",
    "--pipeline.model.implementation", "torch", "--pipeline.model.num-levels", "8", "--pipeline.model.max-res", "128",
    "--pipeline.model.log2-hashmap-size", "14", "--pipeline.model.num-proposal-samples-per-ray", "32",
    "--pipeline.model.num-nerf-samples-per-ray", "24", "--steps-per-save", "5", "--steps-per-eval-image", "100000",
    "--experiment-name", "disc", "--timestamp", "run",
]
ENV = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")


def ns_train(tmp_path: Path, *extra: str) -> list:
    return [sys.executable, "-m", "nerfstudio.scripts.train", "single-image-nerf", "--data",
            str(tmp_path / "disc.png"), "--output-dir", str(tmp_path / "outputs"), *TINY_FLAGS, *extra,
            "pipeline.guidance:none"]


@pytest.mark.slow
def test_sigkill_leaves_a_usable_checkpoint_and_resume_continues_at_its_step(tmp_path):
    write_ball_image(tmp_path / "disc.png", size=32)
    models = tmp_path / "outputs" / "disc" / "single-image-nerf" / "run" / "nerfstudio_models"
    process = subprocess.Popen(ns_train(tmp_path, "--max-num-iterations", "100000"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(models.glob("step-*.ckpt")):
            assert process.poll() is None, "ns-train ended before its first checkpoint"
            time.sleep(0.2)
        time.sleep(1.5)  # let it train on, and perhaps be writing the next checkpoint, when it is killed
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    checkpoints = sorted(models.glob("step-*.ckpt"))
    assert len(checkpoints) == 1, checkpoints  # only the latest is kept; a partial file never sits among them
    assert not [p for p in models.iterdir() if not p.name.startswith("step-")]
    saved = torch.load(checkpoints[-1], map_location="cpu")
    step = saved["step"]
    assert checkpoints[-1].name == f"step-{step:09d}.ckpt"
    assert all(torch.isfinite(v).all() for v in saved["pipeline"].values() if v.is_floating_point())

    total = step + 4
    resumed = subprocess.run(ns_train(tmp_path, "--max-num-iterations", str(total), "--load-dir", str(models),
                                      "--timestamp", "resumed"),
                             capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    output = " ".join(resumed.stdout.split())
    assert f"Resuming at step {step + 1}; training to step {total}" in output, output[-2000:]
    latest = sorted((models.parent.parent / "resumed" / "nerfstudio_models").glob("step-*.ckpt"))
    assert [p.name for p in latest] == [f"step-{total - 1:09d}.ckpt"]
    assert torch.load(latest[-1], map_location="cpu")["step"] == total - 1
    percents = [float(p) for p in re.findall(r"\((\d+(?:\.\d+)?)%\)", output)]
    assert percents and max(percents) <= 100.0, output[-2000:]  # progress counts toward the run's total

    # A finished run resumed to its own total trains nothing and ends cleanly, its checkpoint kept.
    done = subprocess.run(ns_train(tmp_path, "--max-num-iterations", str(total), "--load-dir",
                                   str(latest[-1].parent), "--timestamp", "again"),
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    output = " ".join(done.stdout.split())
    assert f"training to step {total} (0 steps left)" in output and "Training Finished" in output, output[-2000:]
    again = sorted((models.parent.parent / "again" / "nerfstudio_models").glob("step-*.ckpt"))
    assert [torch.load(p, map_location="cpu")["step"] for p in again] == [total - 1]


SAVING_CHILD = """
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from tiny_training import tiny_config, write_ball_image

root = Path(sys.argv[1])
config = tiny_config(write_ball_image(root / "disc.png", size=32), root / "outputs", steps=10**6, rays=128)
config.pipeline.model.log2_hashmap_size = 17  # a checkpoint of about 50 MB: each write takes a while
config.experiment_name, config.timestamp = "disc", "run"
models = config.get_checkpoint_dir()
if checkpoints := sorted(models.glob("step-*.ckpt")):
    config.load_dir = models  # resume from the last checkpoint, as a restarted job does
trainer = config.setup(local_rank=0, world_size=1)
trainer.setup()
trainer.pipeline.train()
step = trainer._start_step
print(f"started at {step}", flush=True)
while True:
    trainer.train_iteration(step)
    print(f"saving {step}", flush=True)
    start = time.perf_counter()
    trainer.save_checkpoint(step)
    print(f"saved {step} in {time.perf_counter() - start:.4f} s", flush=True)
    step += 1
"""
"""Trains and saves a checkpoint after every step through the trainer's own save_checkpoint, forever, saying on
stdout when each save starts and when it ended (with its duration); restarted on the same folder it resumes from the last checkpoint."""


def log_lines(path: Path) -> list:
    """The child's own complete lines (nerfstudio prints other lines to the same stdout)."""
    return [line for line in path.read_text().split("\n")[:-1] if line.startswith(("started at ", "saving ", "saved "))]


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_leaves_the_last_complete_one(tmp_path):
    """Kill -9 the training process at random moments inside save_checkpoint, three times on the same run folder,
    each time restarted from what is left: the newest checkpoint always loads, holds the step its name says and at
    least the last step reported saved, and no partial write sits in the folder under a checkpoint's name."""
    rng = random.Random(0)
    tests = str(Path(__file__).resolve().parent)
    models = tmp_path / "outputs" / "disc" / "single-image-nerf" / "run" / "nerfstudio_models"
    mid_write, last_step = 0, -1
    for round_ in range(3):
        log = tmp_path / f"round{round_}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-c", SAVING_CHILD, str(tmp_path), tests], stdout=out,
                                       stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        try:
            deadline = time.time() + 120
            # Wait for a completed save in this round, then for the start of the next one, and kill inside it.
            while time.time() < deadline and not [line for line in log_lines(log) if line.startswith("saved")]:
                assert process.poll() is None, f"the training process ended: {log.read_text()[-2000:]}"
                time.sleep(0.01)
            while time.time() < deadline and not log_lines(log)[-1].startswith("saving"):
                assert process.poll() is None, f"the training process ended: {log.read_text()[-2000:]}"
                time.sleep(0.002)
            duration = float([line for line in log_lines(log) if line.startswith("saved")][0].split()[3])
            time.sleep(rng.uniform(0.0, 0.6) * duration)  # at a random moment of the save (0.07 s here)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        lines = log_lines(log)
        assert lines[0] == f"started at {last_step + 1}", lines[0]  # resumed from the previous round's checkpoint
        mid_write += lines[-1].startswith("saving")
        reported = max(int(line.split()[1]) for line in lines if line.startswith("saved"))

        # Every file in the folder is a whole checkpoint under its step's name, and only the latest is kept.
        names = sorted(p.name for p in models.iterdir())
        for name in names:
            assert name.startswith("step-") and name.endswith(".ckpt"), names
            try:
                saved = torch.load(models / name, map_location="cpu")
            except Exception as error:  # pylint: disable=broad-except
                pytest.fail(f"{name} (of {names}) does not load: {error}")
            assert name == f"step-{saved['step']:09d}.ckpt"
        assert len(names) == 1, names
        assert checkpoint_steps(models) == [saved["step"]]
        assert saved["step"] >= reported > last_step
        assert {"pipeline", "optimizers", "schedulers", "scalers"} <= set(saved)
        assert all(torch.isfinite(v).all() for v in saved["pipeline"].values() if v.is_floating_point())
        last_step = saved["step"]
    assert mid_write >= 2, f"only {mid_write} of 3 kills landed inside a save"


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    config = tiny_config(write_ball_image(root / "disc.png", size=32), root / "outputs", steps=10, rays=256)
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.pipeline.train()
    trainer.train_iteration(0)  # an ordinary step first: Adam has momentum that could move weights on its own
    return trainer


def weights(trainer) -> dict:
    return {name: p.detach().clone() for name, p in trainer.pipeline.model.named_parameters()}


def assert_unchanged_and_finite(before: dict, trainer) -> None:
    for name, p in trainer.pipeline.model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("fault", ["nan", "inf"])
def test_a_non_finite_loss_skips_the_step(trainer, fault, monkeypatch, capsys):
    model = trainer.pipeline.model
    original = model.get_loss_dict

    def faulty(*args, **kwargs):
        losses = original(*args, **kwargs)
        losses["rgb_loss"] = losses["rgb_loss"] * float(fault)
        return losses

    monkeypatch.setattr(model, "get_loss_dict", faulty)
    before, skipped = weights(trainer), trainer.pipeline.skipped_steps
    trainer.train_iteration(1)
    assert_unchanged_and_finite(before, trainer)
    assert trainer.pipeline.skipped_steps == skipped + 1
    assert "non-finite rgb_loss; this step is skipped" in " ".join(capsys.readouterr().out.split())
    monkeypatch.undo()
    trainer.train_iteration(2)
    assert not torch.equal(next(model.field.parameters()).detach(), before[next(iter(before))])


def test_nan_gradients_from_a_finite_loss_skip_the_step(trainer, monkeypatch, capsys):
    model = trainer.pipeline.model
    original = model.get_loss_dict

    def faulty(*args, **kwargs):
        losses = original(*args, **kwargs)
        # sqrt at 0: the value is 0 (finite loss), its gradient infinite, times 0: NaN in every field weight.
        total = sum(p.sum() for p in model.field.parameters())
        losses["rgb_loss"] = losses["rgb_loss"] + torch.sqrt(0.0 * total)
        return losses

    monkeypatch.setattr(model, "get_loss_dict", faulty)
    before, skipped = weights(trainer), trainer.pipeline.skipped_steps
    _, loss_dict, _ = trainer.train_iteration(3)
    assert all(torch.isfinite(v) for v in loss_dict.values())
    assert_unchanged_and_finite(before, trainer)
    assert trainer.pipeline.skipped_steps == skipped + 1
    assert "non-finite gradients in fields; this step is skipped" in " ".join(capsys.readouterr().out.split())
