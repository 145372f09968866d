"""The live viewer: the panel this project adds to nerfstudio's viser viewer (reference camera with its photo, the
step's novel cameras, shading switch, stage and guidance status) against a real viser server, and a short CPU
training with `--vis viewer` opened in headless Chromium, whose screenshot must show the rendered object."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from single_image_nerf.viewer import SHADINGS, TrainingViewerPanel, status_markdown

from tiny_training import tiny_config, write_ball_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY_TRAIN_FLAGS = [
    "--machine.device-type", "cpu", "--pipeline.datamanager.dataparser.image-size", "32",
    "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.datamanager.novel-views.resolution", "16",
    "--pipeline.model.implementation", "torch", "--pipeline.model.num-levels", "8", "--pipeline.model.max-res", "128",
    "--pipeline.model.log2-hashmap-size", "14", "--pipeline.model.num-proposal-samples-per-ray", "32",
    "--pipeline.model.num-nerf-samples-per-ray", "24", "--logging.steps-per-log", "5",
]
"""The coarse method at test sizes (as tests/tiny_training.py's tiny_config), as ns-train flags."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("panel")
    config = tiny_config(write_ball_image(root / "disc.png", size=32), root / "outputs", steps=10)
    return config.pipeline.setup(device="cpu", test_mode="val")


@pytest.fixture()
def server():
    import viser

    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    yield server
    server.stop()


def test_panel_draws_reference_and_follows_the_novel_cameras(pipeline, server):
    rerenders = []
    panel = TrainingViewerPanel(server, pipeline, total_steps=2000, rerender=lambda: rerenders.append(1))
    # The reference camera carries the photo (composited on white) and sits where the dataparser put it.
    reference = pipeline.datamanager.train_dataparser_outputs.cameras[0].camera_to_worlds.numpy()
    assert np.allclose(panel.reference_handle.position, reference[:3, 3] * 10.0, atol=1e-4)

    assert panel.update(0, force=True)
    first = [np.array(handle.position) for handle in panel.novel_handles]
    assert len(first) == pipeline.datamanager.novel_view_stage(0)[0]
    expected = pipeline.datamanager.next_novel_cameras(1500).camera_to_worlds[:, :3, 3].numpy() * 10.0
    assert panel.update(1500, force=True)
    later = [np.array(handle.position) for handle in panel.novel_handles]
    assert np.allclose(later, expected, atol=1e-4) and not np.allclose(later, first)
    assert not panel.update(1501)  # throttled: at most one redraw per interval
    assert "**Stage:** coarse" in panel.status.content and "1500 / 2000" in panel.status.content

    # The cameras and renders of a real training step are shown when they are the current step's.
    pipeline.train()
    pipeline.get_train_loss_dict(7)
    assert pipeline.last_novel_views[0] == 7
    assert panel.update(7, force=True) and "7 / 2000" in panel.status.content

    # Shading switch: options, effect on the model's renders outside training, a rerender asked for.
    assert tuple(panel.shading.options) == SHADINGS
    pipeline.eval()
    camera = pipeline.datamanager.train_dataparser_outputs.cameras[0:1]
    renders = {}
    for shading in ("albedo", "normals", "textureless"):
        panel.set_shading(shading)
        assert pipeline.model.viewer_shading == shading
        with torch.no_grad():
            renders[shading] = pipeline.model.get_outputs_for_camera(camera)["rgb"]
    assert len(rerenders) == 3
    assert not torch.allclose(renders["albedo"], renders["normals"])
    grey = renders["textureless"]
    assert torch.allclose(grey[..., 0], grey[..., 1]) and torch.allclose(grey[..., 1], grey[..., 2])
    with pytest.raises(ValueError):
        panel.set_shading("wireframe")
    panel.set_shading("albedo")


def test_status_shows_the_guidance_timestep_range():
    text = status_markdown("refine", 120, 2000, {"t_min": 0.02, "t_max": 0.5, "skipped_steps": 1.0},
                           "stablediffusion")
    assert "**Stage:** refine" in text and "120 / 2000" in text
    assert "t in [0.020, 0.500]" in text and "skipped_steps 1" in text


def screenshot(url: str, path: Path, profile: Path, budget_ms: int = 12000) -> None:
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}",
                    "--window-size=1200,800", f"--virtual-time-budget={budget_ms}", url],
                   capture_output=True, timeout=120, check=True)


def dump_dom(url: str, profile: Path, budget_ms: int = 8000) -> str:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           f"--virtual-time-budget={budget_ms}", url],
                          capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (tools/run_tests.sh installs it as root)")
def test_training_with_the_viewer_shows_a_rendered_view_in_chromium(tmp_path):
    image = write_ball_image(tmp_path / "disc.png", size=64)
    port = free_port()
    log = open(tmp_path / "train.log", "w")
    command = [sys.executable, "-m", "nerfstudio.scripts.train", "single-image-nerf", "--data", str(image),
               "--output-dir", str(tmp_path / "outputs"), "--vis", "viewer", "--viewer.websocket-host", "127.0.0.1",
               "--viewer.websocket-port", str(port), "--max-num-iterations", "25", *TINY_TRAIN_FLAGS,
               "pipeline.guidance:none"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
                               env=dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 240
        text = ""
        while time.time() < deadline and "Training Finished" not in text:
            assert process.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            time.sleep(1.0)
            text = (tmp_path / "train.log").read_text()
        assert "Training Finished" in text, text[-3000:]
        assert "coarse stage, training to step 25" in text and "ETA" in text
        url = f"http://127.0.0.1:{port}"
        profile = Path(tempfile.mkdtemp(dir=tmp_path))
        shot = Path(os.environ.get("VIEWER_SCREENSHOT", tmp_path / "viewer.png"))
        screenshot(url, shot, profile)
        pixels = np.asarray(Image.open(shot).convert("RGB"))
        # The 3D view is left of the control panel, below the title bar; the object is in its middle.
        view = pixels[60:, :860]
        assert view.std() > 10.0, "the view is blank"
        height, width = view.shape[:2]
        middle = view[2 * height // 5: 3 * height // 5, 2 * width // 5: 3 * width // 5].astype(float)
        covered = float((middle.mean(axis=-1) < 200.0).mean())
        assert covered > 0.5, f"no rendered object in the middle of the view ({covered:.0%} of it is not white)"
        dom = dump_dom(url, Path(tempfile.mkdtemp(dir=tmp_path)))
        for text in ("Stage:", "coarse", "Shading", "Guidance:", "Novel cameras"):
            assert text in dom, text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
