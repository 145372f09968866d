"""What the default chain downloads on first use, per device, against a fake hub that lists each default repository
with the files it publishes (tests/hub_server.py): the real hub client filters and fetches them through the
project's own code, and the test reads back which files were requested and adds up their published sizes.

The default demo (`bash tools/demo.sh`) fetches, on first use: the SAM vit_b checkpoint and DPT-Hybrid
(preprocessing), BLIP base (the caption), Stable Diffusion 2.1-base's text encoder, UNet and VAE (the prior), and
VGG16 (the refine stage's contextual loss). The preprocessing models run in fp32 on every device; the prior runs in
fp16 on CUDA, so there only its fp16 files are fetched. Budget: at most 6 GB on CUDA.
"""

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import huggingface_hub.constants as hub_constants
from hub_server import FakeHub, folder_files
from served_models import save_random_vgg16_features
from single_image_nerf import pretrained
from tiny_diffusion import build_tiny_stable_diffusion
from tiny_preprocess_models import save_tiny_blip, save_tiny_dpt

GB = 1e9
MB = 1e6
SD_COMPONENTS = {"text_encoder": "model", "unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
PUBLISHED = {
    pretrained.STABLE_DIFFUSION_ID: {
        **{f"{sub}/{stem}{tag}.{kind}": size for sub, stem in SD_COMPONENTS.items() for tag, kind, size in (
            ("", "safetensors", {"text_encoder": 1.36 * GB, "unet": 3.46 * GB, "vae": 335 * MB}[sub]),
            ("", "bin", {"text_encoder": 1.36 * GB, "unet": 3.46 * GB, "vae": 335 * MB}[sub]),
            (".fp16", "safetensors", {"text_encoder": 681 * MB, "unet": 1.73 * GB, "vae": 167 * MB}[sub]),
            (".fp16", "bin", {"text_encoder": 681 * MB, "unet": 1.73 * GB, "vae": 167 * MB}[sub]))},
        "v2-1_512-ema-pruned.ckpt": 5.21 * GB, "v2-1_512-ema-pruned.safetensors": 5.21 * GB,
        "v2-1_512-nonema-pruned.ckpt": 7.70 * GB, "v2-1_512-nonema-pruned.safetensors": 7.70 * GB,
        "tokenizer/vocab.json": 1.06 * MB, "tokenizer/merges.txt": 525e3, "README.md": 12e3,
    },
    pretrained.CAPTION_MODEL_ID: {"model.safetensors": 990 * MB, "pytorch_model.bin": 990 * MB,
                                  "tf_model.h5": 990 * MB, "tokenizer.json": 711e3, "vocab.txt": 232e3,
                                  "README.md": 4e3},
    pretrained.DEPTH_MODEL_ID: {"model.safetensors": 490 * MB, "pytorch_model.bin": 490 * MB, "README.md": 6e3},
}
"""Files each default repository publishes, with their sizes as the hub lists them (rounded), besides small configs:
Stability AI's stable-diffusion-2-1-base (which the sd2-community mirror reproduces, fp16 files included),
Salesforce/blip-image-captioning-base and Intel/dpt-hybrid-midas."""
URL_SIZES = {"sam_vit_b_01ec64.pth": 375_042_383, "vgg16-397923af.pth": 553_433_881}
"""The URL checkpoints, in bytes as Meta and torchvision publish them."""


def half_copy(data: bytes) -> bytes:
    """A safetensors file's tensors in fp16 (what a repository publishes as its .fp16.safetensors)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "w.safetensors", Path(folder) / "h.safetensors"
        source.write_bytes(data)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()},
                  str(target))
        return target.read_bytes()


def served_repo(tiny: dict, published: dict, fp16: bool = True) -> dict:
    """The repository as served: the tiny model's files under their own names, each published file too (an fp16 copy
    of the tiny weights for a `.fp16.safetensors`, a few placeholder bytes for what is never loaded here)."""
    files = dict(tiny)
    for name in published:
        plain = name.replace(".fp16.", ".")
        if name in files:
            continue
        if ".fp16." in name and not fp16:
            continue
        if name.endswith(".fp16.safetensors") and plain in tiny:
            files[name] = half_copy(tiny[plain])
        else:
            files[name] = f"published: {name}".encode()
    return files


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    tiny = {pretrained.STABLE_DIFFUSION_ID: build_tiny_stable_diffusion(root / "sd"),
            pretrained.CAPTION_MODEL_ID: save_tiny_blip(root / "blip"),
            pretrained.DEPTH_MODEL_ID: save_tiny_dpt(root / "dpt")}
    served = {repo: served_repo(folder_files(folder), PUBLISHED[repo]) for repo, folder in tiny.items()}
    vgg = save_random_vgg16_features(root / "vgg16.pth").read_bytes()
    urls = {urlparse(pretrained.sam_checkpoint_url("vit_b")).path: b"SAM vit_b checkpoint",
            urlparse(pretrained.VGG16_URL).path: vgg}
    return served, urls


@pytest.fixture()
def hub(repos, monkeypatch, tmp_path):
    """The fake hub as the only source of models: empty caches, downloads on."""
    served, urls = repos
    fake = FakeHub(served, urls)
    for name, value in {"HF_ENDPOINT": fake.endpoint, "SINGLE_IMAGE_NERF_CACHE": str(tmp_path / "cache"),
                        "HF_HUB_CACHE": str(tmp_path / "users-hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
                        "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                        "SINGLE_IMAGE_NERF_OFFLINE": "0", "SINGLE_IMAGE_NERF_SAM_URL": fake.endpoint + "/segment_anything/",
                        "SINGLE_IMAGE_NERF_VGG16_URL": fake.endpoint + urlparse(pretrained.VGG16_URL).path}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "users-hf"))
    yield fake
    fake.close()


def run_default_chain(device: str, photo: Path, out: Path):
    """Every download of the demo's first run on `device`, through the functions its commands call; returns the
    loaded prior (for its precision)."""
    from single_image_nerf.guidance.loading import load_stable_diffusion, stable_diffusion_folder
    from single_image_nerf.preprocess.caption import load_caption_model
    from single_image_nerf.preprocess.depth import load_depth_model
    from single_image_nerf.preprocess.pipeline import preprocess_image
    from single_image_nerf.preprocess.sam import find_sam_checkpoint
    from single_image_nerf.refine.contextual_loss import build_vgg16_features

    if device == "cpu":
        preprocess_image(photo, out, size=32, device="cpu", progress=False)  # DPT and BLIP (the photo has alpha)
    else:  # the same loaders off the CPU ("meta" stands for the GPU: no tensor is computed)
        load_depth_model(pretrained.DEPTH_MODEL_ID, torch.device("meta"))
        load_caption_model(pretrained.CAPTION_MODEL_ID, torch.device("meta"))
    find_sam_checkpoint(pretrained.DEFAULT_SAM_MODEL)  # what a photo without alpha needs
    dtype = torch.float16 if device == "cuda" else torch.float32  # the prior's precision (guidance/distillation.py)
    stable_diffusion_folder(pretrained.STABLE_DIFFUSION_ID, "--model-path")
    parts = load_stable_diffusion(pretrained.STABLE_DIFFUSION_ID, torch.device("cpu"), dtype, "--model-path")
    build_vgg16_features("imagenet", last_layer=3)
    return parts


def fetched(hub: FakeHub) -> dict:
    """Each downloaded file (hub id/path, or the URL's file name) and its published size in bytes (a config's own)."""
    sizes = {}
    for repo, name in hub.downloads:
        if repo == "url":
            sizes[Path(name).name] = URL_SIZES[Path(name).name]
        else:
            sizes[f"{repo}/{name}"] = PUBLISHED[repo].get(name, len(hub.repos[repo][name]))
    return sizes


def weights(files: dict) -> list:
    return sorted(name for name in files if name.endswith((".safetensors", ".bin", ".pth", ".h5", ".ckpt")))


SD = pretrained.STABLE_DIFFUSION_ID
EXPECTED = {
    "cuda": [f"{SD}/text_encoder/model.fp16.safetensors", f"{SD}/unet/diffusion_pytorch_model.fp16.safetensors",
             f"{SD}/vae/diffusion_pytorch_model.fp16.safetensors"],
    "cpu": [f"{SD}/text_encoder/model.safetensors", f"{SD}/unet/diffusion_pytorch_model.safetensors",
            f"{SD}/vae/diffusion_pytorch_model.safetensors"],
}
PREPROCESS_AND_URLS = [f"{pretrained.DEPTH_MODEL_ID}/model.safetensors", f"{pretrained.CAPTION_MODEL_ID}/model.safetensors",
                       "sam_vit_b_01ec64.pth", "vgg16-397923af.pth"]


@pytest.mark.parametrize("device, budget", [("cuda", 6 * GB), ("cpu", 8 * GB)])
def test_the_default_chain_fetches_only_what_it_runs(hub, tmp_path, device, budget, capsys):
    photo = tmp_path / "disc.png"
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[12:36, 12:36] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(photo)
    parts = run_default_chain(device, photo, tmp_path / "data")
    files = fetched(hub)
    assert weights(files) == sorted(EXPECTED[device] + PREPROCESS_AND_URLS), weights(files)
    assert len(hub.downloads) == len(files)  # nothing fetched twice
    total = sum(files.values())
    with capsys.disabled():  # the file list and the total, in the test log
        print(f"\n{device}: {len(files)} files, {total / GB:.2f} GB")
        for name in weights(files):
            print(f"  {files[name] / GB:6.3f} GB  {name}")
    assert total <= budget
    want = torch.float16 if device == "cuda" else torch.float32
    assert {parts.unet.dtype, parts.vae.dtype, parts.text_encoder.dtype} == {want}
    assert "publishes no fp16" not in capsys.readouterr().err


def test_cuda_budget_figure(hub, tmp_path):
    """The README's figures: about 5.0 GB on CUDA (under the 6 GB budget), 7.6 GB on a CPU."""
    cuda = sum(PUBLISHED[SD][name.split(f"{SD}/")[1]] for name in EXPECTED["cuda"])
    cpu = sum(PUBLISHED[SD][name.split(f"{SD}/")[1]] for name in EXPECTED["cpu"])
    rest = 490 * MB + 990 * MB + sum(URL_SIZES.values())
    assert round((cuda + rest) / GB, 1) == 5.0 and round((cpu + rest) / GB, 1) == 7.6


def test_without_fp16_files_the_full_precision_ones_come_with_one_line(repos, hub, capsys):
    from single_image_nerf.guidance.loading import load_stable_diffusion

    served, _ = repos
    hub.repos[SD] = {name: data for name, data in served[SD].items() if ".fp16." not in name}
    parts = load_stable_diffusion(SD, torch.device("cpu"), torch.float16, "--model-path")
    assert parts.unet.dtype == torch.float16
    lines = [line for line in capsys.readouterr().err.splitlines() if "fp16" in line]
    assert lines == [f"the Stable Diffusion prior '{SD}' publishes no fp16 weights; fetching its full-precision "
                     "weights instead (cast to fp16 once loaded)"]
    assert weights(fetched(hub)) == EXPECTED["cpu"]


def test_weights_already_cached_are_used_whatever_their_precision(hub, tmp_path):
    from single_image_nerf.guidance.loading import load_stable_diffusion

    load_stable_diffusion(SD, torch.device("cpu"), torch.float32, "--model-path")  # a CPU run first: fp32 files
    before = list(hub.downloads)
    hub.close()  # then no network at all: an fp16 run uses the cached fp32 files
    parts = load_stable_diffusion(SD, torch.device("cpu"), torch.float16, "--model-path")
    assert parts.unet.dtype == torch.float16 and hub.downloads == before
