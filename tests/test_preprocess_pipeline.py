"""The whole preprocessing through the command line (`sin-preprocess`), with tiny random-weight SAM, DPT and BLIP-2.

The models are saved the way users' models are and read back through the same loading code (`from_pretrained` on a
local folder, SAM's registry with a checkpoint file); the produced folder is then read by the coarse dataparser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from single_image_nerf.preprocess import cli
from tiny_preprocess_models import (TINY_SAM, build_tiny_sam, save_tiny_blip, save_tiny_blip2, save_tiny_dpt,
                                    save_tiny_sam_checkpoint)

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {
        "dpt": str(save_tiny_dpt(root / "dpt")),
        "blip2": str(save_tiny_blip2(root / "blip2")),
        "blip": str(save_tiny_blip(root / "blip")),
        "sam": str(save_tiny_sam_checkpoint(root / "sam_tiny.pth")),
    }


def _disc(height: int = 90, width: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a noisy grey background, and its mask."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(90, 140, (height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    mask = (yy - height * 0.45) ** 2 + (xx - width * 0.55) ** 2 < (min(height, width) * 0.28) ** 2
    rgb[mask] = (200, 30, 30)
    return rgb, mask


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("photos")
    rgb, mask = _disc()
    rgba = np.dstack([rgb, np.where(mask, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "cutout.png")
    Image.fromarray(rgb).save(root / "photo.png")
    empty = rgba.copy()
    empty[..., 3] = 0
    Image.fromarray(empty, mode="RGBA").save(root / "empty.png")
    return {"cutout": root / "cutout.png", "photo": root / "photo.png", "empty": root / "empty.png"}


def _run(photo, output, *flags: str) -> int:
    return cli.main([str(photo), "--output", str(output), "--size", str(SIZE), "--quiet", *flags])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sin-preprocess: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_full_run_writes_the_folder_and_the_dataparser_reads_it(tmp_path, photos, models, capsys):
    out = tmp_path / "data" / "disc"
    assert _run(photos["cutout"], out, "--depth-model", models["dpt"], "--caption-model", models["blip2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["rgba.png", "depth.npy", "depth_preview.png", "caption.txt", "meta.json"]
    )
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    with Image.open(out / "rgba.png") as image:
        assert image.mode == "RGBA" and image.size == (SIZE, SIZE)
        rgba = np.asarray(image)
    alpha = rgba[..., 3]
    foreground = alpha >= 128
    assert 0.05 < foreground.mean() < 0.9 and alpha[0].max() == 0 and alpha[:, 0].max() == 0  # border is empty

    depth = np.load(out / "depth.npy")
    assert depth.shape == (SIZE, SIZE) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth[~foreground] == 0).all() and (depth[foreground] > 0).all()
    with Image.open(out / "depth_preview.png") as preview:
        assert preview.size == (SIZE, SIZE) and preview.mode == "RGB"

    caption = (out / "caption.txt").read_text(encoding="utf-8")
    assert caption.endswith("\n") and caption.count("\n") == 1 and caption.strip()

    meta = json.loads((out / "meta.json").read_text())
    assert meta["input"]["path"] == str(photos["cutout"].resolve())
    assert meta["input"]["original_size"] == [120, 90] and meta["input"]["working_size"] == [120, 90]
    assert meta["size"] == SIZE and meta["border"] == 0.15
    assert meta["mask"]["source"] == "alpha"
    assert meta["models"] == {"sam": None, "depth": models["dpt"], "caption": models["blip2"]}
    assert meta["depth_convention"] == "disparity" == meta["depth"]["depth_convention"]
    low, high = meta["depth"]["depth_range"]
    assert low == pytest.approx(float(depth[foreground].min())) and high == pytest.approx(float(depth[foreground].max()))
    assert meta["caption"] == caption.strip() and meta["caption_source"] == "blip2"
    for package in ("single-image-nerf", "numpy", "pillow", "torch", "transformers", "opencv"):
        assert meta["versions"][package], package
    assert meta["files"] == ["rgba.png", "depth.npy", "depth_preview.png", "caption.txt"]
    assert set(meta["timings_s"]) >= {"load photo", "mask (alpha)", "depth (DPT)", "caption"}

    from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig

    outputs = SingleImageDataParserConfig(data=out, image_size=SIZE).setup().get_dataparser_outputs("train")
    assert outputs.metadata["caption"] == caption.strip()
    read_depth = outputs.metadata["depth"]
    assert read_depth is not None and tuple(read_depth.shape) == (SIZE, SIZE)
    assert np.isfinite(read_depth.numpy()).any()
    assert Path(outputs.metadata["data_dir"]) == out


def test_blip_captions_as_blip2_does(tmp_path, photos, models):
    """The default captioner is BLIP (BlipForConditionalGeneration), told from BLIP-2 by its config.json."""
    out = tmp_path / "blip"
    assert _run(photos["cutout"], out, "--no-depth", "--caption-model", models["blip"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["caption_source"] == "blip" and meta["models"]["caption"] == models["blip"]
    assert (out / "caption.txt").read_text(encoding="utf-8").strip() == meta["caption"]
    assert _run(photos["cutout"], tmp_path / "dpt", "--no-depth", "--caption-model", models["dpt"]) == 2


def test_no_depth_no_caption_and_given_caption(tmp_path, photos, capsys):
    bare = tmp_path / "bare"
    assert _run(photos["cutout"], bare, "--no-depth", "--no-caption") == 0
    assert sorted(p.name for p in bare.iterdir()) == ["meta.json", "rgba.png"]
    meta = json.loads((bare / "meta.json").read_text())
    assert meta["depth"] is None and meta["depth_convention"] is None and meta["caption"] is None
    assert meta["models"] == {"sam": None, "depth": None, "caption": None}
    assert meta["device"] is None  # no model ran, so no device was chosen

    # --caption skips BLIP-2 entirely: a caption model that does not exist is never loaded
    given = tmp_path / "given"
    assert _run(photos["cutout"], given, "--no-depth", "--caption", "a red\ndisc ", "--caption-model", str(tmp_path / "none")) == 0
    assert (given / "caption.txt").read_text(encoding="utf-8") == "a red disc\n"
    meta = json.loads((given / "meta.json").read_text())
    assert meta["caption_source"] == "user" and meta["models"]["caption"] is None

    from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig

    outputs = SingleImageDataParserConfig(data=bare, image_size=SIZE).setup().get_dataparser_outputs("train")
    assert outputs.metadata["depth"] is None and outputs.metadata["caption"] is None
    outputs = SingleImageDataParserConfig(data=given, image_size=SIZE).setup().get_dataparser_outputs("train")
    assert outputs.metadata["caption"] == "a red disc"

    assert _run(photos["cutout"], tmp_path / "blank", "--no-depth", "--caption", "  ") == 2
    assert "caption given is empty" in _one_line_error(capsys)


def test_mask_sources(tmp_path, photos, models, monkeypatch, capsys):
    from segment_anything import sam_model_registry

    # alpha on a photo without transparency: a one-line error naming the alternatives
    assert _run(photos["photo"], tmp_path / "a", "--mask-from", "alpha", "--no-depth", "--no-caption") == 2
    assert "no transparency" in _one_line_error(capsys) and not (tmp_path / "a").exists()

    # grabcut needs no weights and finds the disc
    assert _run(photos["photo"], tmp_path / "g", "--mask-from", "grabcut", "--no-depth", "--no-caption") == 0
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["mask"]["source"] == "grabcut" and meta["models"]["sam"] is None
    assert 0.1 < meta["mask"]["area_fraction"] < 0.6

    # SAM through segment-anything's registry and a checkpoint file (random weights, seed 0: a non-empty mask; not
    # the disc's, and it runs into the photo's top edge, hence --allow-cut)
    monkeypatch.setitem(sam_model_registry, TINY_SAM, build_tiny_sam)
    code = _run(
        photos["photo"], tmp_path / "s", "--mask-from", "sam", "--sam-model", TINY_SAM, "--sam-checkpoint",
        models["sam"], "--box", "20", "10", "110", "80", "--no-depth", "--no-caption", "--device", "cpu", "--allow-cut",
    )
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["mask"]["source"] == "sam" and meta["models"]["sam"] == TINY_SAM and meta["device"] == "cpu"
    assert meta["mask"]["checkpoint"] == models["sam"] and meta["mask"]["prompt"]["box"] == [20.0, 10.0, 110.0, 80.0]

    # the SAM checkpoint is required and named when missing
    assert _run(photos["photo"], tmp_path / "m", "--mask-from", "sam", "--sam-checkpoint", str(tmp_path / "x.pth")) == 2
    assert "--sam-checkpoint" in _one_line_error(capsys) and not (tmp_path / "m").exists()


def test_empty_mask_is_a_one_line_error(tmp_path, photos, capsys):
    out = tmp_path / "empty"
    assert _run(photos["empty"], out, "--no-depth", "--no-caption") == 2
    err = _one_line_error(capsys)
    assert "foreground mask is empty" in err and "--box" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_existing_folder_is_never_overwritten_without_overwrite(tmp_path, photos, capsys):
    out = tmp_path / "out"
    assert _run(photos["cutout"], out, "--no-depth", "--caption", "first") == 0
    before = _snapshot(out)
    assert _run(photos["cutout"], out, "--no-depth", "--caption", "second") == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert _snapshot(out) == before

    assert _run(photos["cutout"], out, "--no-depth", "--caption", "second", "--overwrite") == 0
    assert (out / "caption.txt").read_text() == "second\n"

    # a folder that preprocessing did not write is left alone even with --overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert _run(photos["cutout"], foreign, "--no-depth", "--no-caption", "--overwrite") == 2
    assert "no meta.json" in _one_line_error(capsys)
    assert _snapshot(foreign) == {"notes.txt": b"keep me"}


@pytest.mark.parametrize("step", ["depth", "caption"])
def test_missing_weights_name_the_model_and_the_fix(tmp_path, photos, step, capsys):
    missing_folder = str(tmp_path / "no-such-model")
    flags = {"depth": ["--no-caption"], "caption": ["--no-depth"]}[step]
    for model in (missing_folder, "no-such-org/no-such-model"):
        out = tmp_path / "out"
        assert _run(photos["cutout"], out, f"--{step}-model", model, *flags) == 2
        err = _one_line_error(capsys)
        assert f"the {step} model '{model}'" in err
        assert f"--{step}-model PATH" in err and f"--no-{step}" in err
        assert not out.exists()


def test_console_script_exits_non_zero_with_one_line(tmp_path, photos):
    """The installed `sin-preprocess` with no network: status 2 and one line on stderr."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TRANSFORMERS_OFFLINE="1")
    script = Path(sys.executable).with_name("sin-preprocess")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from single_image_nerf.preprocess.cli import main; sys.exit(main())"]
    done = subprocess.run(
        command + [str(photos["cutout"]), "--output", str(tmp_path / "out"), "--size", str(SIZE), "--quiet",
                   "--no-caption", "--depth-model", "Intel/dpt-hybrid-midas"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Intel/dpt-hybrid-midas" in lines[0] and "--depth-model PATH" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
