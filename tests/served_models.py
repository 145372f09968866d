"""Every default model of the project, served offline the way users get them: tiny random-weight models in a hub
cache laid out as the hub client writes it (models--org--name/{refs,blobs,snapshots}) under the default ids, and the
URL checkpoints (SAM, VGG16) from an HTTP server on 127.0.0.1 at the official file paths.

`served_environment()` builds all of it once per test session and returns the environment variables that point the
project at it (its cache folder, the mirrors of the URL downloads, an empty Hugging Face cache of the user's own and a
dead hub endpoint, so nothing outside is ever reached). Downloads stay switched on: the URL checkpoints really are
downloaded through the project's code, and the hub models are found in the cache by the hub client itself.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import http.server
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Dict
from urllib.parse import urlparse

import torch

from single_image_nerf import pretrained
from tiny_diffusion import build_tiny_clip, build_tiny_stable_diffusion
from tiny_preprocess_models import save_tiny_blip, save_tiny_blip2, save_tiny_dpt
from tiny_zero123 import build_tiny_zero123

SERVED_HUB_MODELS = {
    pretrained.STABLE_DIFFUSION_ID: build_tiny_stable_diffusion,
    pretrained.ZERO123_ID: build_tiny_zero123,
    pretrained.DEPTH_MODEL_ID: save_tiny_dpt,
    pretrained.CAPTION_MODEL_ID: save_tiny_blip,
    pretrained.CAPTION_BLIP2_ID: save_tiny_blip2,
    pretrained.CLIP_GUIDANCE_ID: build_tiny_clip,
    pretrained.CLIP_METRIC_ID: build_tiny_clip,
}
"""Each hub id served, and the builder of its tiny model (a folder in the public layout)."""


def write_hub_repo(cache: Path, repo_id: str, source: Path, commit: str) -> Path:
    """Put the files of `source` into `cache` as the hub client stores a download of `repo_id` at `commit`: each
    file's bytes in blobs/<sha256>, the snapshot a tree of relative symlinks to them, refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def save_random_sam_vit_b(path: Path, seed: int = 0) -> Path:
    """segment-anything's vit_b at random weights (the default model's architecture: the file the URL serves)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(seed)
    torch.save(sam_model_registry[pretrained.DEFAULT_SAM_MODEL]().state_dict(), path)
    return path


def save_random_vgg16_features(path: Path, seed: int = 0) -> Path:
    """torchvision's VGG16 feature layers at random weights, as a state dict with torchvision's key names (the
    classifier, which the contextual loss never uses, is left out to keep the file small)."""
    from torchvision.models import vgg16

    torch.manual_seed(seed)
    torch.save({f"features.{k}": v for k, v in vgg16(weights=None).features.state_dict().items()}, path)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D401 - no request log in the test output
        pass


def serve_folder(folder: Path) -> str:
    """Serve `folder` over HTTP on 127.0.0.1 (a daemon thread for the rest of the session); returns the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    atexit.register(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}/"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=None)
def served_root() -> Path:
    """The served hub cache (root/cache/hub) and the web root (root/web) of the URL checkpoints, built once."""
    root = Path(tempfile.mkdtemp(prefix="served-models-"))
    atexit.register(shutil.rmtree, root, True)
    built = root / "built"
    for index, (repo_id, build) in enumerate(SERVED_HUB_MODELS.items()):
        source = build(built / repo_id.replace("/", "--"))
        write_hub_repo(root / "cache" / "hub", repo_id, source, commit=f"{index:040x}")
    web = root / "web"
    sam = web / urlparse(pretrained.sam_checkpoint_url(pretrained.DEFAULT_SAM_MODEL)).path.lstrip("/")
    vgg = web / urlparse(pretrained.VGG16_URL).path.lstrip("/")
    for path in (sam, vgg):
        path.parent.mkdir(parents=True, exist_ok=True)
    save_random_sam_vit_b(sam)
    save_random_vgg16_features(vgg)
    shutil.rmtree(built)
    return root


@functools.lru_cache(maxsize=None)
def _base_url() -> str:
    return serve_folder(served_root() / "web")


def served_environment(cache: Path) -> Dict[str, str]:
    """Environment variables under which every default model resolves to the served ones: `cache` (a fresh folder)
    becomes the project's cache, holding a copy of the served hub cache; URL downloads go to the local server."""
    shutil.copytree(served_root() / "cache", cache, symlinks=True, dirs_exist_ok=True)
    base = _base_url()
    empty = Path(tempfile.mkdtemp(prefix="empty-hf-"))
    atexit.register(shutil.rmtree, empty, True)
    return {
        "SINGLE_IMAGE_NERF_CACHE": str(cache),
        "SINGLE_IMAGE_NERF_SAM_URL": base + urlparse(pretrained.SAM_BASE_URL).path.lstrip("/"),
        "SINGLE_IMAGE_NERF_VGG16_URL": base + urlparse(pretrained.VGG16_URL).path.lstrip("/"),
        "HF_HUB_CACHE": str(empty),  # the user's own Hugging Face cache: empty here
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",  # the hub itself: unreachable
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "SINGLE_IMAGE_NERF_OFFLINE": "0",
    }
