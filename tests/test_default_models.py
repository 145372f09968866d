"""The default models: every default id and URL is one the tests serve, downloads are checked and atomic, and every
way a model can be missing ends in one line that says which model, why, and the option that points elsewhere."""

import http.server
import threading
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub.constants as hub_constants
import pytest

from served_models import SERVED_HUB_MODELS, closed_port, served_environment, served_root, write_hub_repo
from single_image_nerf import pretrained
from single_image_nerf.guidance.clip_guidance import ClipGuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.textual_inversion import TextualInversionConfig
from single_image_nerf.preprocess.pipeline import PreprocessOptions
from single_image_nerf.pretrained import ModelUnavailableError, download_url, resolve_hub_weights
from single_image_nerf.scripts.evaluate import EvaluateConfig


def test_every_default_is_served_and_used():
    assert set(pretrained.DEFAULT_HUB_MODELS.values()) == set(SERVED_HUB_MODELS)
    configured = {StableDiffusionGuidanceConfig().model_path, TextualInversionConfig().model_path,
                  ClipGuidanceConfig().model_path, EvaluateConfig(load_config=Path("config.yml")).clip_model, PreprocessOptions().depth_model,
                  PreprocessOptions().caption_model}
    assert configured <= set(pretrained.DEFAULT_HUB_MODELS.values())
    assert "stabilityai/stable-diffusion-2-1-base" not in configured  # removed from the hub in November 2025
    web = served_root() / "web"
    for url in pretrained.default_urls().values():
        assert (web / urlparse(url).path.lstrip("/")).is_file(), f"{url} is a default download the tests do not serve"


class _Hub(http.server.BaseHTTPRequestHandler):
    """A hub endpoint that answers every request with one error, as huggingface.co does."""

    status, code = 404, "RepoNotFound"

    def do_GET(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("X-Error-Code", self.code)
        self.send_header("X-Error-Message", "error from the test hub")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A local hub endpoint (its answer set per test), with downloads on and empty caches."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Hub", (_Hub,), {}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # the hub client reads the variable at import
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "0")
    yield server.RequestHandlerClass
    server.shutdown()


@pytest.mark.parametrize("status, code, expected", [
    (404, "RepoNotFound", "was not found on the Hugging Face hub (removed, renamed or private)"),
    (401, "RepoNotFound", "was not found on the Hugging Face hub (removed, renamed or private)"),
    (403, "GatedRepo", "is gated on the Hugging Face hub: accept its licence"),
])
def test_hub_failures_are_named(hub, status, code, expected):
    hub.status, hub.code = status, code
    with pytest.raises(ModelUnavailableError) as error:
        resolve_hub_weights("some-org/gone-model", "Stable Diffusion prior", "--pipeline.guidance.model-path")
    message = str(error.value)
    assert expected in message and "'some-org/gone-model'" in message and "no network" not in message
    assert "--pipeline.guidance.model-path PATH" in message and "\n" not in message


def test_no_network_and_downloads_off_are_said_so(monkeypatch, tmp_path):
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "0")
    with pytest.raises(ModelUnavailableError, match="no network connection to the Hugging Face hub"):
        resolve_hub_weights("some-org/model", "depth model", "--depth-model")
    url = f"http://127.0.0.1:{closed_port()}/sam.pth"
    with pytest.raises(ModelUnavailableError, match="no network connection") as error:
        download_url(url, tmp_path / "sam.pth", "SAM vit_b checkpoint", "--sam-checkpoint")
    assert url in str(error.value) and "--sam-checkpoint PATH" in str(error.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError, match=r"downloads are off \(HF_HUB_OFFLINE=1\)"):
        resolve_hub_weights("some-org/model", "depth model", "--depth-model")
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"downloads are off \(SINGLE_IMAGE_NERF_OFFLINE=1\)"):
        download_url(url, tmp_path / "sam.pth", "SAM vit_b checkpoint", "--sam-checkpoint")


def test_hub_models_come_from_the_users_cache_first_then_ours(monkeypatch, tmp_path):
    source = SERVED_HUB_MODELS[pretrained.DEPTH_MODEL_ID](tmp_path / "dpt")
    users = tmp_path / "users-hf"
    write_hub_repo(users, pretrained.DEPTH_MODEL_ID, source, commit="1" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(users))
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "ours"))
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(users))  # the hub client reads it once, at import
    folder = resolve_hub_weights(pretrained.DEPTH_MODEL_ID, "depth model", "--depth-model", ("config.json",))
    assert folder == users / "models--Intel--dpt-hybrid-midas" / "snapshots" / ("1" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    write_hub_repo(tmp_path / "ours" / "hub", pretrained.DEPTH_MODEL_ID, source, commit="2" * 40)
    folder = resolve_hub_weights(pretrained.DEPTH_MODEL_ID, "depth model", "--depth-model", ("config.json",))
    assert folder == tmp_path / "ours" / "hub" / "models--Intel--dpt-hybrid-midas" / "snapshots" / ("2" * 40)


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes and sends 10, or answers 404 for /gone."""

    def do_GET(self):  # noqa: N802
        if self.path == "/gone":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")

    def log_message(self, *args):
        pass


def test_url_downloads_are_checked_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Truncating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        target = tmp_path / "ckpt" / "sam_vit_b_01ec64.pth"
        with pytest.raises(ModelUnavailableError, match="stopped at 10 of 1000 bytes|no network"):
            download_url(f"{base}/file", target, "SAM vit_b checkpoint", "--sam-checkpoint")
        assert list(target.parent.iterdir()) == []  # nothing half-written is left to look finished
        with pytest.raises(ModelUnavailableError, match="was not found"):
            download_url(f"{base}/gone", target, "SAM vit_b checkpoint", "--sam-checkpoint")
        assert list(target.parent.iterdir()) == []
    finally:
        server.shutdown()
    # the served checkpoint downloads completely, once
    env = served_environment(tmp_path / "cache")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = pretrained.checkpoint_cache() / "sam_vit_b_01ec64.pth"
    assert download_url(pretrained.sam_checkpoint_url("vit_b"), path, "SAM", "--sam-checkpoint") == path
    served = served_root() / "web" / "segment_anything" / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == served.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == [path.name]
