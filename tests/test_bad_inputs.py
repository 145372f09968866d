"""Bad input across the commands: each case must end with one clear line on stderr (no traceback) and a non-zero
exit, and leave every file the user already had exactly as it was (bytes and modification time).

Commands are called in-process through the functions their console scripts call (ns-train through nerfstudio's
`train.main`); three cases run the real console commands to check what reaches the terminal."""

import contextlib
import copy
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tiny_training import tiny_config, train, write_ball_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_scripts"))
PROGRESS = re.compile(r"\d+%\||\r")
"""A progress bar's line (tqdm), which a terminal overwrites; it is not an error line."""


# ----------------------------------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> Dict[str, Tuple[int, bytes]]:
    """Every file under `root`: modification time and bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def run_case(call: Callable[[], object]) -> Tuple[int, List[str]]:
    """Run a command in-process: its exit status and the lines it wrote to stderr (SystemExit messages included,
    as Python prints them; progress bars left out)."""
    err = io.StringIO()
    status = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            result = call()
            status = result if isinstance(result, int) else 0
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                err.write(exit_.code + "\n")
                status = 1
            else:
                status = exit_.code or 0
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not PROGRESS.search(line)]
    return status, lines


def assert_refused(call: Callable[[], object], expected: str, user_files: Path) -> None:
    before = snapshot(user_files)
    status, lines = run_case(call)
    assert status != 0, f"exit status 0 (stderr: {lines})"
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and expected.lower() in lines[0].lower(), lines[0]
    after = snapshot(user_files)
    changed = [name for name, state in before.items() if after.get(name) != state]
    assert not changed, f"files the user had were changed or removed: {changed}"


def write_photo(path: Path, centre_x: int, size: int = 128, alpha: bool = False) -> Path:
    """A photo of a red disc on a grey, slightly noisy background (with `alpha`, a cut-out of the disc); the frame
    cuts the disc off when `centre_x` is less than its radius (a quarter of `size`)."""
    rows, cols = np.mgrid[:size, :size]
    inside = (rows - size // 2) ** 2 + (cols - centre_x) ** 2 < (size // 4) ** 2
    image = 200 + np.random.default_rng(0).integers(0, 10, (size, size, 3)).astype(np.uint8)
    image[inside] = (200, 40, 30)
    if alpha:
        image = np.dstack([image, np.where(inside, 255, 0).astype(np.uint8)])
    Image.fromarray(image).save(path)
    return path


def several_photo_folder(root: Path, name: str) -> Path:
    """A data folder of two photos of the ball (azimuths 0 and 180), as sin-preprocess writes it."""
    from single_image_nerf.preprocess.pipeline import preprocess_image

    write_ball_image(root / "disc_back.png", size=32)
    return preprocess_image([root / "disc.png", root / "disc_back.png"], root / "data" / name, azimuths=(0.0, 180.0),
                            mask_from="alpha", size=32, depth=False, caption=False, progress=False).output_dir


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """What a user has: photos, a preprocessed folder, a file in the way, a finished coarse run, other runs."""
    root = tmp_path_factory.mktemp("user")
    write_ball_image(root / "disc.png", size=32)
    (root / "empty.jpg").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(os.urandom(2000))
    (root / "truncated.png").write_bytes((root / "disc.png").read_bytes()[:200])
    Image.fromarray(np.zeros((32, 32, 4), np.uint8)).save(root / "transparent.png")
    (root / "notes.txt").write_text("a file where a folder is expected\n")
    (root / "empty_folder").mkdir()
    data = root / "data" / "disc"
    data.mkdir(parents=True)
    (data / "rgba.png").write_bytes((root / "disc.png").read_bytes())
    (data / "caption.txt").write_text("a ball\n")
    bad_depth = root / "data" / "bad_depth"
    bad_depth.mkdir()
    (bad_depth / "rgba.png").write_bytes((root / "disc.png").read_bytes())
    np.save(bad_depth / "depth.npy", np.ones((5, 7), np.float32))
    (root / "existing.ply").write_bytes(b"ply\nmine\n")
    write_photo(root / "whole.png", 64)
    write_photo(root / "cut.png", 30)  # the frame cuts the disc at the left
    write_photo(root / "cut_cutout.png", 16, alpha=True)
    views = several_photo_folder(root, "two_views")
    steep = shutil.copytree(views, root / "data" / "steep_view")  # a hand-edited view: elevation out of range
    meta = steep / "views" / "1" / "meta.json"
    meta.write_text(meta.read_text().replace('"elevation_deg": 0.0', '"elevation_deg": 120.0'))
    opaque = shutil.copytree(views, root / "data" / "view_without_alpha")  # a view's rgba.png saved without alpha
    Image.open(opaque / "views" / "1" / "rgba.png").convert("RGB").save(opaque / "views" / "1" / "rgba.png")
    (root / "existing.gif").write_bytes(b"GIF89a mine")

    config = tiny_config(root / "disc.png", root / "outputs", steps=2, rays=128)
    config.steps_per_save = 2
    train(config)
    run = config.get_base_dir() / "config.yml"
    mismatched = yaml.load(run.read_text(), Loader=yaml.Loader)  # the same checkpoint, other model settings
    mismatched.pipeline.model.num_levels = 4
    shutil.copytree(run.parent, root / "mismatched")
    (root / "mismatched" / "config.yml").write_text(yaml.dump(mismatched))
    tcnn = yaml.load(run.read_text(), Loader=yaml.Loader)  # the same run, its field as tiny-cuda-nn stores it
    source = tcnn.get_base_dir()
    tcnn.output_dir = root / "tcnn_outputs"
    shutil.copytree(source, tcnn.get_base_dir())
    (tcnn.get_base_dir() / "config.yml").write_text(yaml.dump(tcnn))
    checkpoint = sorted(tcnn.get_checkpoint_dir().glob("step-*.ckpt"))[-1]
    state = torch.load(checkpoint, map_location="cpu")
    weights = state["pipeline"]
    weights["_model.field.encoding.tcnn_encoding.params"] = weights.pop("_model.field.encoding.hash_table").flatten()
    layers = [key for key in list(weights) if key.startswith("_model.field.mlp.layers.")]
    weights["_model.field.mlp.tcnn_encoding.params"] = torch.cat([weights.pop(key).flatten() for key in layers])
    torch.save(state, checkpoint)

    from nerfstudio.configs.method_configs import method_configs
    other = copy.deepcopy(method_configs["nerfacto"])
    other.output_dir = root / "outputs"
    other_dir = root / "outputs" / "disc" / "nerfacto" / "run"
    other_dir.mkdir(parents=True)
    (other_dir / "config.yml").write_text(yaml.dump(other))
    (root / "not_yaml.yml").write_text("{not: [yaml")
    return {"root": root, "data": data, "bad_depth": bad_depth, "run": run, "nerfacto": other_dir / "config.yml",
            "steep_view": steep, "view_without_alpha": opaque,
            "mismatched": root / "mismatched" / "config.yml",
            "tcnn": tcnn.get_base_dir() / "config.yml",
            "checkpoints": run.parent / "nerfstudio_models"}


# ---------------------------------------------------------------------------------------------- sin-preprocess
def preprocess(*argv: str) -> Callable[[], int]:
    from single_image_nerf.preprocess.cli import main

    return lambda: main(list(argv) + ["--no-depth", "--no-caption", "--quiet"])


PREPROCESS_CASES = {
    "missing photo": (lambda r: preprocess(str(r / "nope.jpg"), "-o", str(r / "out1")), "nope.jpg"),
    "empty photo": (lambda r: preprocess(str(r / "empty.jpg"), "-o", str(r / "out2")), "empty.jpg"),
    "corrupt photo": (lambda r: preprocess(str(r / "corrupt.jpg"), "-o", str(r / "out3")), "corrupt.jpg"),
    "truncated png": (lambda r: preprocess(str(r / "truncated.png"), "-o", str(r / "out4")), "truncated.png"),
    "folder as photo": (lambda r: preprocess(str(r / "empty_folder"), "-o", str(r / "out5")), "empty_folder"),
    "empty mask": (lambda r: preprocess(str(r / "transparent.png"), "-o", str(r / "out6"), "--mask-from", "alpha"),
                   "mask"),
    "size 0": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "out7"), "--size", "0"), "size"),
    "negative border": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "out8"), "--border", "-0.1"),
                        "border"),
    "border too wide": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "out9"), "--border", "0.6"),
                        "border"),
    "existing output": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "data" / "disc")), "--overwrite"),
    "output under a file": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "notes.txt" / "out")),
                            "notes.txt"),
    "bad prompt point": (lambda r: preprocess(str(r / "disc.png"), "-o", str(r / "out10"), "--points", "3;4"),
                         "point"),
    "missing sam checkpoint": (lambda r: preprocess(str(r / "corrupt.jpg").replace("corrupt.jpg", "disc.png"), "-o",
                                                    str(r / "out11"), "--mask-from", "sam", "--sam-checkpoint",
                                                    str(r / "sam.pth")), "sam"),
    "one file at two azimuths": (lambda r: preprocess(str(r / "disc.png"), str(r / "disc.png"), "--azimuths", "0",
                                                      "180", "-o", str(r / "out12")), "disc.png is given twice"),
    "a cut-out cut by the frame": (lambda r: preprocess(str(r / "cut_cutout.png"), "-o", str(r / "out13")),
                                   "cut_cutout.png: the object touches the photo's left edge"),
    "a view cut by the frame": (lambda r: preprocess(str(r / "whole.png"), str(r / "cut.png"), "--azimuths", "0",
                                                     "180", "--mask-from", "grabcut", "-o", str(r / "out14")),
                                "cut.png: the object touches the photo's left edge"),
}


@pytest.mark.parametrize("case", list(PREPROCESS_CASES))
def test_preprocess(user, case):
    make, expected = PREPROCESS_CASES[case]
    assert_refused(make(user["root"]), expected, user["root"])


@pytest.mark.parametrize("photo", ["cut_cutout.png", "cut.png"])
def test_preprocess_keeps_an_object_cut_on_purpose_with_allow_cut(user, photo, tmp_path):
    root = user["root"]
    status, lines = run_case(preprocess(str(root / photo), "-o", str(tmp_path / "out"), "--mask-from",
                                        "alpha" if "cutout" in photo else "grabcut", "--allow-cut"))
    assert status == 0 and not lines, lines
    assert (tmp_path / "out" / "rgba.png").is_file()


def test_preprocess_takes_a_trimmed_cutout_as_whole(user, tmp_path):
    """A cut-out trimmed to its object (a box with rounded corners) lies along every edge of its image: it is
    whole, not cut by a frame."""
    rows, cols = np.mgrid[:40, :40]
    corner = np.hypot(np.clip(np.abs(rows - 19.5) - 12, 0, None), np.clip(np.abs(cols - 19.5) - 12, 0, None)) > 8
    box = np.zeros((40, 40, 4), np.uint8)
    box[..., 0], box[..., 3] = 180, np.where(corner, 0, 255)
    Image.fromarray(box).save(tmp_path / "trimmed.png")
    status, lines = run_case(preprocess(str(tmp_path / "trimmed.png"), "-o", str(tmp_path / "out")))
    assert status == 0 and not lines, lines


# ---------------------------------------------------------------------------------------------------- ns-train
def ns_train(user, edit: Callable) -> Callable[[], None]:
    from nerfstudio.scripts.train import main

    # Runs of the cases go beside the user's files (ns-train writes config.yml before it checks the data).
    config = tiny_config(user["root"] / "disc.png", user["root"].parent / "case_outputs", steps=2, rays=128)
    config.vis = "tensorboard"
    edit(config)
    return lambda: main(config)


def _set(path: str, value) -> Callable:
    def edit(config):
        target = config
        *parents, name = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value(config) if callable(value) else value)
    return edit


TRAIN_CASES = {
    "missing data": (lambda u: _set("pipeline.datamanager.data", u["root"] / "nope"), "does not exist"),
    "wrong folder": (lambda u: _set("pipeline.datamanager.data", u["root"] / "empty_folder"), "rgba.png"),
    "corrupt image": (lambda u: _set("pipeline.datamanager.data", u["root"] / "corrupt.jpg"), "corrupt.jpg"),
    "empty image": (lambda u: _set("pipeline.datamanager.data", u["root"] / "empty.jpg"), "empty.jpg"),
    "empty mask": (lambda u: _set("pipeline.datamanager.data", u["root"] / "transparent.png"), "mask"),
    "depth of another size": (lambda u: _set("pipeline.datamanager.data", u["bad_depth"]), "depth.npy"),
    "fov 180": (lambda u: _set("pipeline.datamanager.dataparser.reference_fov", 180.0), "fov"),
    "negative radius": (lambda u: _set("pipeline.datamanager.dataparser.reference_radius", -2.5), "radius"),
    "image size 0": (lambda u: _set("pipeline.datamanager.dataparser.image_size", 0), "image-size"),
    "novel fov 180": (lambda u: _set("pipeline.datamanager.novel_views.fov_range", (30.0, 180.0)), "fov"),
    "novel radius negative": (lambda u: _set("pipeline.datamanager.novel_views.radius_range", (-3.0, 3.0)),
                              "radius"),
    "load-dir not a folder": (lambda u: _set("load_dir", u["root"] / "nope"), "--load-dir"),
    "load-dir without checkpoints": (lambda u: _set("load_dir", u["root"] / "empty_folder"), "no step-"),
    "load-step missing": (lambda u: (lambda c: (_set("load_dir", u["checkpoints"])(c),
                                                _set("load_step", 12345)(c))), "--load-step 12345"),
    "checkpoint of other settings": (lambda u: (lambda c: (_set("load_dir", u["checkpoints"])(c),
                                                           _set("pipeline.model.num_levels", 4)(c))), "checkpoint"),
    "output folder under a file": (lambda u: _set("output_dir", u["root"] / "notes.txt" / "outputs"), "notes.txt"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_ns_train(user, case):
    make, expected = TRAIN_CASES[case]
    assert_refused(ns_train(user, make(user)), expected, user["root"])


SEVERAL_PHOTO_CASES = {
    "a view's elevation out of range": ("steep_view", "views/1/meta.json elevation_deg) must be a number of degrees "
                                        "in [-89, 89], got 120.0"),
    "a view without alpha": ("view_without_alpha", "has no alpha channel, so the object's mask is unknown: rerun "
                             "sin-preprocess with every photo and their --azimuths"),
}
"""Hand-edited several-photo folders: (the folder, what the line says)."""


@pytest.mark.parametrize("case", list(SEVERAL_PHOTO_CASES))
def test_ns_train_several_photos(user, case):
    """Every view is checked as the main view is, before ns-train writes its run folder."""
    folder, expected = SEVERAL_PHOTO_CASES[case]
    runs = user["root"].parent / "case_outputs"
    before = sorted(runs.rglob("config.yml"))
    assert_refused(ns_train(user, _set("pipeline.datamanager.data", user[folder])), expected, user["root"])
    assert sorted(runs.rglob("config.yml")) == before, "ns-train wrote a run folder before refusing"


# ------------------------------------------------------------------------------------------------------ refine
def refine(user, coarse: Path) -> Callable[[], None]:
    from nerfstudio.scripts.train import main

    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.method_configs import refine_trainer_config

    config = refine_trainer_config(max_steps=2)
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = user["root"].parent / "case_outputs"
    config.pipeline.model.coarse_config = coarse
    config.pipeline.guidance = NoGuidanceConfig()  # the tiny coarse run has no caption for a prompt
    return lambda: main(config)


REFINE_CASES = {
    "no coarse run": (lambda u: None, "coarse-config"),
    "missing coarse config": (lambda u: u["root"] / "nope.yml", "does not exist"),
    "another method's run": (lambda u: u["nerfacto"], "nerfacto"),
    "not a config": (lambda u: u["root"] / "not_yaml.yml", "not a nerfstudio config.yml"),
    "a folder": (lambda u: u["root"] / "empty_folder", "folder"),
    "coarse checkpoint of other settings": (lambda u: u["mismatched"], "does not fit"),
    "coarse checkpoint trained with tiny-cuda-nn": (lambda u: u["tcnn"], "trained with tiny-cuda-nn"),
}


@pytest.mark.parametrize("case", list(REFINE_CASES))
def test_refine(user, case):
    make, expected = REFINE_CASES[case]
    assert_refused(refine(user, make(user)), expected, user["root"])


# ------------------------------------------------------------------------------------------ textual inversion
def textual_inversion(*argv: str) -> Callable[[], object]:
    import textual_inversion as script  # data_scripts/textual_inversion.py

    return lambda: script.main(list(argv) + ["--device", "cpu"])


TI_CASES = {
    "missing data": (lambda r: textual_inversion("--data", str(r / "nope")), "does not exist"),
    "wrong folder": (lambda r: textual_inversion("--data", str(r / "empty_folder")), "rgba.png"),
    "corrupt image": (lambda r: textual_inversion("--data", str(r / "corrupt.jpg")), "corrupt.jpg"),
    "zero steps": (lambda r: textual_inversion("--data", str(r / "data" / "disc"), "--steps", "0"), "steps"),
    "missing weights": (lambda r: textual_inversion("--data", str(r / "data" / "disc"), "--model-path",
                                                    str(r / "no_model")), "no_model"),
    "output under a file": (lambda r: textual_inversion("--data", str(r / "data" / "disc"), "--output",
                                                        str(r / "notes.txt" / "token")), "notes.txt"),
}


@pytest.mark.parametrize("case", list(TI_CASES))
def test_textual_inversion(user, case):
    make, expected = TI_CASES[case]
    assert_refused(make(user["root"]), expected, user["root"])


# ------------------------------------------------------------------------------------------ exports, evaluate
def export_mesh(config: Path, output: Path, **options) -> Callable[[], None]:
    from single_image_nerf.scripts.export_mesh import ExportMeshConfig, export_mesh as run

    return lambda: run(ExportMeshConfig(load_config=config, output=output, **options))


def turntable(config: Path, output: Path, **options) -> Callable[[], object]:
    from single_image_nerf.scripts.render_turntable import TurntableConfig, render_turntable

    return lambda: render_turntable(TurntableConfig(load_config=config, output=output, **options))


def evaluate(config: Path, **options) -> Callable[[], object]:
    from single_image_nerf.scripts.evaluate import EvaluateConfig, run

    return lambda: run(EvaluateConfig(load_config=config, **options))


EXPORT_CASES = {
    "mesh: missing config": (lambda u: export_mesh(u["root"] / "nope.yml", u["root"] / "m.ply"), "nope.yml"),
    "mesh: another method's run": (lambda u: export_mesh(u["nerfacto"], u["root"] / "m.ply"), "nerfacto"),
    "mesh: existing output": (lambda u: export_mesh(u["run"], u["root"] / "existing.ply"), "--overwrite"),
    "mesh: resolution 0": (lambda u: export_mesh(u["run"], u["root"] / "m.ply", resolution=0), "resolution"),
    "mesh: face budget 0": (lambda u: export_mesh(u["run"], u["root"] / "m.ply", max_faces=0), "--max-faces 0"),
    "mesh: face budget 3": (lambda u: export_mesh(u["run"], u["root"] / "m.ply", max_faces=3), "--max-faces 3"),
    "mesh: output under a file": (lambda u: export_mesh(u["run"], u["root"] / "notes.txt" / "m.ply"), "notes.txt"),
    "turntable: zero frames": (lambda u: turntable(u["run"], u["root"] / "t.gif", frames=0), "--frames"),
    "turntable: existing output": (lambda u: turntable(u["run"], u["root"] / "existing.gif"), "--overwrite"),
    "turntable: negative radius": (lambda u: turntable(u["run"], u["root"] / "t.gif", radius=-1.0), "radius"),
    "turntable: fov 180": (lambda u: turntable(u["run"], u["root"] / "t.gif", fov=180.0), "fov"),
    "turntable: another method's run": (lambda u: turntable(u["nerfacto"], u["root"] / "t.gif"), "nerfacto"),
    "evaluate: missing config": (lambda u: evaluate(u["root"] / "nope.yml"), "nope.yml"),
    "evaluate: not a config": (lambda u: evaluate(u["root"] / "not_yaml.yml"), "not_yaml.yml"),
    "evaluate: missing mesh": (lambda u: evaluate(u["run"], known_object="box", mesh=u["root"] / "none.glb"),
                               "--mesh"),
    "evaluate: negative views": (lambda u: evaluate(u["run"], known_object="striped-sphere", num_views=-1), "views"),
    "evaluate: no ground truth": (lambda u: evaluate(u["run"], geometry_views=0, num_views=1), "ground truth"),
    "evaluate: missing posed images": (lambda u: evaluate(u["run"], posed_images=u["root"] / "nope"), "nope"),
    "evaluate: checkpoint of other settings": (lambda u: evaluate(u["mismatched"], known_object="striped-sphere"),
                                               "does not fit"),
    "mesh: checkpoint of other settings": (lambda u: export_mesh(u["mismatched"], u["root"] / "m.ply"),
                                           "does not fit"),
    "mesh: checkpoint trained with tiny-cuda-nn": (lambda u: export_mesh(u["tcnn"], u["root"] / "m.ply"),
                                                   "--pipeline.model.implementation torch"),
    "evaluate: checkpoint trained with tiny-cuda-nn": (lambda u: evaluate(u["tcnn"], known_object="striped-sphere"),
                                                       "trained with tiny-cuda-nn"),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_exports_and_evaluate(user, case):
    make, expected = EXPORT_CASES[case]
    assert_refused(make(user), expected, user["root"])


def test_evaluate_with_no_held_out_views_scores_the_reference_alone(user):
    """--num-views 0 is in its range ([0, 360]): the reference view and the geometry are scored, no held-out view."""
    from single_image_nerf.scripts.evaluate import EvaluateConfig, run

    config = EvaluateConfig(load_config=user["run"], known_object="striped-sphere", num_views=0, geometry_views=2,
                            geometry_resolution=16, num_points=500, clip_model=None)
    with contextlib.redirect_stdout(io.StringIO()):
        report = run(config)
    assert [view["name"] for view in report["views"]] == ["reference"]
    assert report["summary"]["held_out"]["psnr"] is None and report["summary"]["reference"]["psnr"] is not None
    assert report["geometry"]["threshold"] == config.f_score_threshold


# ------------------------------------------------------------------------------------------ sin-batch manifests
MANIFEST_CASES = {
    "binary (a spreadsheet named .csv)": ("m.csv", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "is a binary file"),
    "binary (an image named .jsonl)": ("m.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file"),
    "NUL bytes after many rows": ("m.csv", b"image\n" + b"disc.png\n" * 2000 + b"x\x00.png\n", "is a binary file"),
    "Latin-1": ("m.csv", "image,caption\ndisc.png,caf\xe9\n".encode("latin-1"), ":2: the manifest is not UTF-8"),
    "UTF-16": ("m.csv", "image\ndisc.png\n".encode("utf-16"), "is UTF-16 text, not UTF-8"),
    "empty CSV": ("m.csv", b"", "the manifest is empty"),
    "blank JSONL": ("m.jsonl", b"\n  \n", "the manifest is empty"),
    "header only": ("m.csv", b"image,caption\n", "has no rows"),
    "header and empty rows": ("m.csv", b"image,caption\n,\n,\n", "has no rows"),
    "comments only": ("m.jsonl", b"# nothing yet\n", "has no rows"),
    "a header of empty names": ("m.csv", b",,\ndisc.png,,\n", "names no columns"),
    "a cell over the CSV field limit": ("m.csv", b'image\n"' + b"a" * 200_000 + b'"\n', "not a CSV row"),
    "a JSON list per line": ("m.jsonl", b'[{"image": "disc.png"}]\n', "not a JSON object (a JSON list)"),
    "JSON nested too deeply": ("m.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    "a NUL in a JSON path": ("m.jsonl", b'{"image": "disc\\u0000.png"}\n', "is not a usable path"),
    "a .json array": ("m.json", b'[{"image": "disc.png"}]', "name it .jsonl"),
    "a pipe named .csv": ("m.csv", None, "not a regular file"),
    "null in a JSONL photo list": ("m.jsonl", b'{"image": ["disc.png", null], "azimuths": [0, 180]}\n',
                                   ":1: item 2 of 'image' is null, not text"),
    "a number in a JSONL photo list": ("m.jsonl", b'{"image": ["disc.png", 7], "azimuths": [0, 180]}\n',
                                       ":1: item 2 of 'image' is a number (7), not text"),
    "an object in a JSONL photo list": ("m.jsonl", b'{"image": [{"path": "disc.png"}, "b.png"], "azimuths": [0, 180]}'
                                        b"\n", ":1: item 1 of 'image' is an object, not text"),
    "a number as a JSONL caption": ("m.jsonl", b'{"image": "disc.png", "caption": 3}\n',
                                    ":1: 'caption' is a number (3), not text"),
    "one file at two azimuths": ("m.jsonl", b'{"image": ["disc.png", "./disc.png"], "azimuths": [0, 180]}\n',
                                 "disc.png is given twice (at azimuths 0 and 180"),
    "photos split by a comma in a quoted cell": ("m.csv", b'image,azimuths\n"disc.png,b.png",0;180\n',
                                                 ":2: 1 photo but 2 azimuths: give one azimuth per photo, in the "
                                                 "photos' order (photos in one cell are separated by ';', not ','"),
    "photos split by a comma": ("m.csv", b"image,azimuths\ndisc.png,b.png,0;180\n",
                                ":2: more cells than columns (several photos of one object go in one cell, "
                                "separated by ';'"),
}
"""Manifests sin-batch cannot read: (file name, bytes or None for a named pipe, what the line says)."""


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_batch_manifest(tmp_path, case):
    from single_image_nerf.scripts.batch import main as sin_batch

    name, data, expected = MANIFEST_CASES[case]
    write_ball_image(tmp_path / "disc.png", size=32)
    if data is None:
        os.mkfifo(tmp_path / name)
    else:
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    status, lines = run_case(lambda: sin_batch([str(tmp_path / name), "--output", str(out), "--quiet"]))
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"sin-batch: error: {tmp_path / name}") and expected in lines[0], lines
    assert not out.exists()


def test_batch_when_ray_cannot_start(user, tmp_path):
    """Ray's own start-up failure (here: its temporary folder would lie under a file; on a loaded machine, its
    start-up timeout) ends in one line saying what to try; every object keeps its state, run after run."""
    (tmp_path / "photos").mkdir()
    shutil.copy(user["root"] / "disc.png", tmp_path / "photos" / "disc.png")
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "sin-batch"), str(tmp_path / "photos"), "--output", str(out),
               "--tiny", "--quiet"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", RAY_TMPDIR=str(user["root"] / "notes.txt" / "ray"))
    for attempt in (1, 2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert lines[0].startswith("sin-batch: error: cannot start a local Ray instance (NotADirectoryError: "), lines
        assert "nothing was run" in lines[0] and lines[0].endswith("then rerun the same command to resume"), lines
        with sqlite3.connect(f"file:{out / 'batch.sqlite'}?mode=ro", uri=True) as conn:
            stages = conn.execute("SELECT status, attempts FROM stages WHERE name = 'disc'").fetchall()
            runs = conn.execute("SELECT finished_at, stages_run FROM runs").fetchall()
        assert stages and set(stages) == {("pending", 0)}, stages
        assert len(runs) == attempt and all(finished is not None and count == 0 for finished, count in runs), runs


# ------------------------------------------------------------------------------- what reaches the terminal
@pytest.mark.parametrize("argv, expected", [
    (["ns-train", "single-image-nerf", "--data", "{root}/corrupt.jpg", "--machine.device-type", "cpu",
      "--vis", "tensorboard", "pipeline.guidance:none"], "corrupt.jpg"),
    (["sin-preprocess", "{root}/empty.jpg", "--output", "{root}/out_cli"], "empty.jpg"),
    (["sin-export-mesh", "--load-config", "{root}/nope.yml"], "nope.yml"),
], ids=["ns-train", "sin-preprocess", "sin-export-mesh"])
def test_console_commands_print_one_line(user, argv, expected):
    root = user["root"]
    before = snapshot(root)
    command = [str(Path(sys.executable).parent / argv[0])] + [a.format(root=root) for a in argv[1:]]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    lines = [line for line in re.split(r"[\r\n]", result.stderr) if line.strip() and not PROGRESS.search(line)]
    assert result.returncode != 0
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, result.stderr[-3000:]
    after = snapshot(root)
    assert all(after.get(name) == state for name, state in before.items())
