"""One test per row of docs/inputs.md, the inventory of every input the commands read.

Each broken input either works as documented or is refused before any work with one line and a non-zero exit,
leaving the user's files as they were (the helpers of test_bad_inputs.py). ns-train cases run through nerfstudio's
`train.main` in process: the checks run before the run folder is written, so no training starts; numeric options are
checked through the validator itself, one bad value per option. One real console run per command proves that no
traceback reaches the terminal."""

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from test_bad_inputs import (PROGRESS, assert_refused, evaluate, export_mesh, ns_train, preprocess, refine,  # noqa: F401
                             snapshot, textual_inversion, turntable, user, _set)

from single_image_nerf import inputs
from single_image_nerf.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------- fixtures
def _folder(root: Path, name: str, disc: bytes, **files) -> Path:
    """A data folder holding the disc as rgba.png and `files` ({'depth.npy': array or bytes, ...})."""
    folder = root / name
    folder.mkdir()
    (folder / "rgba.png").write_bytes(disc)
    for filename, content in files.items():
        path = folder / filename
        if isinstance(content, np.ndarray):
            np.save(path, content)
        elif content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


@pytest.fixture(scope="module")
def inv(user):
    """The user's files of test_bad_inputs plus one broken copy of every input of the inventory."""
    root = user["root"] / "inventory"
    root.mkdir()
    disc = (user["root"] / "disc.png").read_bytes()
    rgba = np.array(Image.open(user["root"] / "disc.png"))
    shape = rgba.shape[:2]

    def image(name, array):
        Image.fromarray(array).save(root / name)
        return root / name

    opaque = rgba.copy()
    opaque[..., 3] = 255
    faint = rgba.copy()
    faint[..., 3] = np.minimum(faint[..., 3], 100)
    speck = np.zeros_like(rgba)
    speck[10:12, 10:12] = 255
    paths = {
        "opaque.png": image("opaque.png", opaque),
        "faint.png": image("faint.png", faint),
        "speck.png": image("speck.png", speck),
        "tiny.png": image("tiny.png", rgba[8:16, 8:16]),
        "rgb.png": image("rgb.png", np.ascontiguousarray(rgba[..., :3])),
        "la.png": image("la.png", np.ascontiguousarray(rgba[..., [0, 3]])),
    }
    depth = np.linspace(1.0, 2.0, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    folders = {
        "opaque folder": _folder(root, "opaque_folder", disc),
        "rgba.png a folder": _folder(root, "rgba_dir", disc),
        "rgba.png corrupt": _folder(root, "rgba_corrupt", disc),
        "depth empty": _folder(root, "depth_empty", disc, **{"depth.npy": b""}),
        "depth not npy": _folder(root, "depth_garbage", disc, **{"depth.npy": os.urandom(300)}),
        "depth objects": _folder(root, "depth_objects", disc, **{"depth.npy": np.array([None] * 4, dtype=object)}),
        "depth strings": _folder(root, "depth_strings", disc, **{"depth.npy": np.full(shape, "a")}),
        "depth all nan": _folder(root, "depth_nan", disc, **{"depth.npy": np.full(shape, np.nan, np.float32)}),
        "depth all inf": _folder(root, "depth_inf", disc, **{"depth.npy": np.full(shape, np.inf, np.float32)}),
        "depth 3-d": _folder(root, "depth_3d", disc, **{"depth.npy": depth[..., None]}),
        "depth a folder": _folder(root, "depth_dir", disc, **{"depth.npy": None}),
        "caption latin-1": _folder(root, "caption_latin1", disc, **{"caption.txt": "caf\xe9".encode("latin-1")}),
        "caption binary": _folder(root, "caption_binary", disc, **{"caption.txt": b"\xff\xfe\x00\x81" * 20}),
        "caption a folder": _folder(root, "caption_dir", disc, **{"caption.txt": None}),
        "meta not json": _folder(root, "meta_bad", disc, **{"meta.json": "{not json"}),
        "meta empty": _folder(root, "meta_empty", disc, **{"meta.json": ""}),
        "meta a list": _folder(root, "meta_list", disc, **{"meta.json": "[1, 2]", "depth.npy": depth}),
        "meta latin-1": _folder(root, "meta_latin1", disc, **{"meta.json": '{"a": "\xe9"}'.encode("latin-1"),
                                                               "depth.npy": depth}),
        "meta convention": _folder(root, "meta_convention", disc, **{"meta.json": '{"depth_convention": 3}',
                                                                     "depth.npy": depth}),
        "meta elevation text": _folder(root, "meta_elevation", disc, **{"meta.json": '{"elevation_deg": "10"}'}),
        "meta elevation nan": _folder(root, "meta_elevation_nan", disc, **{"meta.json": '{"elevation_deg": NaN}'}),
        "meta elevation 95": _folder(root, "meta_elevation_95", disc, **{"meta.json": '{"elevation_deg": 95}'}),
        "token not a checkpoint": _folder(root, "token_garbage", disc, **{"token.bin": os.urandom(200)}),
        "token empty": _folder(root, "token_empty", disc, **{"token.bin": b""}),
        # works as documented
        "depth integers": _folder(root, "depth_int", disc, **{"depth.npy": np.ones(shape, np.int64)}),
        "depth constant": _folder(root, "depth_const", disc, **{"depth.npy": np.ones(shape, np.float32)}),
        "depth partly nan": _folder(root, "depth_part", disc, **{"depth.npy": np.where(depth > 1.5, np.nan, depth)}),
        "caption empty": _folder(root, "caption_empty", disc, **{"caption.txt": ""}),
        "caption multi-line": _folder(root, "caption_lines", disc, **{"caption.txt": "a red\nball\n"}),
        "meta without elevation": _folder(root, "meta_plain", disc, **{"meta.json": "{}"}),
    }
    Image.fromarray(opaque).save(folders["opaque folder"] / "rgba.png")
    (folders["rgba.png a folder"] / "rgba.png").unlink()
    (folders["rgba.png a folder"] / "rgba.png").mkdir()
    (folders["rgba.png corrupt"] / "rgba.png").write_bytes(os.urandom(400))
    token = _folder(root, "token_nan", disc)
    torch.save({"<object>": torch.full((8,), float("nan"))}, token / "token.bin")
    folders["token not finite"] = token
    token = _folder(root, "token_two", disc)
    torch.save({"<a>": torch.ones(8), "<b>": torch.ones(8)}, token / "token.bin")
    folders["token two entries"] = token

    # runs whose checkpoint folder is broken, each a copy of the user's coarse run
    runs = {}
    for name in ("cut short", "empty", "not a checkpoint", "stray file"):
        config = yaml.load(user["run"].read_text(), Loader=yaml.Loader)
        config.output_dir = root / "runs" / name.replace(" ", "_")
        shutil.copytree(user["run"].parent, config.get_base_dir())
        (config.get_base_dir() / "config.yml").write_text(yaml.dump(config))
        checkpoint = sorted((config.get_base_dir() / "nerfstudio_models").glob("step-*.ckpt"))[-1]
        data = checkpoint.read_bytes()
        if name == "cut short":
            checkpoint.write_bytes(data[: len(data) // 2])
        elif name == "empty":
            checkpoint.write_bytes(b"")
        elif name == "not a checkpoint":
            checkpoint.write_bytes(os.urandom(4000))
        else:
            (checkpoint.parent / "notes.txt").write_text("mine\n")
        runs[name] = config.get_base_dir() / "config.yml"
    return {**user, "inv": root, "paths": paths, "folders": folders, "runs": runs}


# ------------------------------------------------------------------------------- --data: images and folders
DATA_REFUSED = {
    # image --data names
    "alpha fully opaque": (lambda i: i["paths"]["opaque.png"], "marks nothing (fully opaque)"),
    "alpha below one half everywhere": (lambda i: i["paths"]["faint.png"], "exceeds one half nowhere"),
    "object of 4 pixels": (lambda i: i["paths"]["speck.png"], "fewer than 16"),
    "image 8x8 pixels": (lambda i: i["paths"]["tiny.png"], "at least 16 pixels"),
    "no alpha channel": (lambda i: i["paths"]["rgb.png"], "no alpha channel"),
    # data folder files
    "rgba.png fully opaque": (lambda i: i["folders"]["opaque folder"], "sin-preprocess"),
    "rgba.png a folder": (lambda i: i["folders"]["rgba.png a folder"], "not a file"),
    "rgba.png corrupt": (lambda i: i["folders"]["rgba.png corrupt"], "not a readable image"),
    "depth.npy empty": (lambda i: i["folders"]["depth empty"], "depth.npy is not a readable .npy"),
    "depth.npy not npy": (lambda i: i["folders"]["depth not npy"], "depth.npy is not a readable .npy"),
    "depth.npy objects": (lambda i: i["folders"]["depth objects"], "depth.npy is not a readable .npy"),
    "depth.npy strings": (lambda i: i["folders"]["depth strings"], "not numbers"),
    "depth.npy all nan": (lambda i: i["folders"]["depth all nan"], "no finite depth"),
    "depth.npy all inf": (lambda i: i["folders"]["depth all inf"], "no finite depth"),
    "depth.npy 3-d": (lambda i: i["folders"]["depth 3-d"], "has shape (32, 32, 1)"),
    "depth.npy a folder": (lambda i: i["folders"]["depth a folder"], "depth.npy is a folder"),
    "caption.txt latin-1": (lambda i: i["folders"]["caption latin-1"], "caption.txt is not UTF-8"),
    "caption.txt binary": (lambda i: i["folders"]["caption binary"], "caption.txt is not UTF-8"),
    "caption.txt a folder": (lambda i: i["folders"]["caption a folder"], "caption.txt is a folder"),
    "meta.json not json": (lambda i: i["folders"]["meta not json"], "meta.json is not valid JSON"),
    "meta.json empty": (lambda i: i["folders"]["meta empty"], "meta.json is not valid JSON"),
    "meta.json a list": (lambda i: i["folders"]["meta a list"], "not an object"),
    "meta.json latin-1": (lambda i: i["folders"]["meta latin-1"], "meta.json is not UTF-8"),
    "meta.json depth_convention": (lambda i: i["folders"]["meta convention"], "depth_convention"),
    "meta.json elevation text": (lambda i: i["folders"]["meta elevation text"], "elevation_deg"),
    "meta.json elevation nan": (lambda i: i["folders"]["meta elevation nan"], "elevation_deg"),
    "meta.json elevation 95": (lambda i: i["folders"]["meta elevation 95"], "elevation_deg"),
}


@pytest.mark.parametrize("case", list(DATA_REFUSED))
def test_data_refused_by_ns_train(inv, case):
    make, expected = DATA_REFUSED[case]
    outputs = inv["root"].parent / "case_outputs"
    before = set(outputs.rglob("config.yml")) if outputs.exists() else set()
    assert_refused(ns_train(inv, _set("pipeline.datamanager.data", make(inv))), expected, inv["root"])
    after = set(outputs.rglob("config.yml")) if outputs.exists() else set()
    assert after == before, "a refused run wrote a run folder"


TOKEN_REFUSED = {
    "token.bin not a checkpoint": ("token not a checkpoint", "not a readable token file"),
    "token.bin empty": ("token empty", "not a readable token file"),
    "token.bin not finite": ("token not finite", "not finite"),
    "token.bin two entries": ("token two entries", "single {token: embedding}"),
}


@pytest.mark.parametrize("case", list(TOKEN_REFUSED))
def test_token_refused_when_the_prior_would_read_it(inv, case):
    """The Stable Diffusion prior reads token.bin; checked with the options, before its weights are loaded."""
    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig

    folder, expected = TOKEN_REFUSED[case]

    def edit(config):
        config.pipeline.datamanager.data = inv["folders"][folder]
        config.pipeline.guidance = StableDiffusionGuidanceConfig(model_path=str(inv["root"] / "no_weights_needed"))

    assert_refused(ns_train(inv, edit), expected, inv["root"])
    # without the prior the token is not read, and the data is fine
    from tiny_training import tiny_config

    plain = tiny_config(inv["folders"][folder], inv["root"] / "unused", steps=1)
    plain.pipeline.guidance = NoGuidanceConfig()
    inputs.check_training_config(plain)


DATA_ACCEPTED = ["depth integers", "depth constant", "depth partly nan", "caption empty", "caption multi-line",
                 "meta without elevation"]


@pytest.mark.parametrize("case", DATA_ACCEPTED + ["grey + alpha image"])
def test_data_that_works_as_documented(inv, case):
    from single_image_nerf.data.reference_image import read_reference

    path = inv["paths"]["la.png"] if case == "grey + alpha image" else inv["folders"][case]
    inputs.check_data(path)
    view = read_reference(path, 32, 0.15, True)
    assert view.rgba.shape == (32, 32, 4) and np.isfinite(view.rgba).all()
    if case == "caption empty":
        assert view.caption is None
    if case == "caption multi-line":
        assert view.caption == "a red\nball"
    if case == "depth partly nan":
        assert np.isnan(view.depth).any() and np.isfinite(view.depth).any()


# ------------------------------------------------------------------------------------------ numeric options
def _configs():
    """Both methods with each prior, and the commands' configs: what the inventory's numeric table covers."""
    from single_image_nerf.guidance import registry
    from single_image_nerf.method_configs import coarse_trainer_config, refine_trainer_config
    from single_image_nerf.scripts.evaluate import EvaluateConfig
    from single_image_nerf.scripts.export_mesh import ExportMeshConfig
    from single_image_nerf.scripts.render_turntable import TurntableConfig
    from single_image_nerf.guidance.textual_inversion import TextualInversionConfig

    configs = []
    for make in (coarse_trainer_config, refine_trainer_config):
        for option in typing.get_args(registry.AnyGuidanceConfig):
            cls = typing.get_args(option)[0] if typing.get_args(option) else option
            config = make()
            config.pipeline.guidance = cls()
            configs.append(config)
    return configs + [ExportMeshConfig(load_config=Path("x.yml")), TurntableConfig(load_config=Path("x.yml")),
                      EvaluateConfig(load_config=Path("x.yml")), TextualInversionConfig()]


def _numeric_rows():
    rows = {}
    for path, key, rule in inputs.numeric_inventory(_configs()):
        rows.setdefault(key, (path, rule))
    return rows


NUMERIC_ROWS = _numeric_rows()


def test_every_numeric_option_has_a_rule():
    missing = sorted(key for key, (_, rule) in NUMERIC_ROWS.items() if rule is None)
    assert not missing, f"numeric options without a rule in single_image_nerf/inputs.py NUMERIC_RULES: {missing}"


def test_defaults_pass_their_rules():
    for config in _configs():
        inputs.check_numbers(config)


def _bad_values(rule):
    """Values the rule must refuse: below, above, not finite (as fits the rule)."""
    def shaped(value):
        return (value, value) if rule.pair else (value,) if rule.sequence else value

    bad = []
    if rule.low is not None:
        bad.append(shaped(rule.low if rule.open_low else rule.low - 1))
    if rule.high is not None:
        bad.append(shaped(rule.high if rule.open_high else rule.high + 1))
    if not rule.integer:
        bad.append(shaped(float("nan")))
        bad.append(shaped(float("inf")))
    if rule.pair:
        low = rule.low if rule.low is not None else -1.0
        high = rule.high if rule.high is not None else low + 2
        mid_low, mid_high = (low + (high - low) * 0.25, low + (high - low) * 0.75)
        if rule.integer:
            mid_low, mid_high = int(math.ceil(mid_low)), int(math.floor(mid_high))
        if mid_low < mid_high:
            bad.append((mid_high, mid_low))
    if rule.sequence and not rule.empty:
        bad.append(())
    if not rule.optional:
        bad.append(None)
    return bad


@pytest.mark.parametrize("key", sorted(NUMERIC_ROWS))
def test_numeric_option_out_of_range_is_one_line(key):
    path, rule = NUMERIC_ROWS[key]
    for config in _configs():
        found = [(p, owner, name) for p, owner, name, _ in inputs.numeric_fields(config)
                 if f"{type(owner).__name__}.{name}" == key]
        if found:
            break
    _, owner, name = found[0]
    default = getattr(owner, name)
    for value in _bad_values(rule):
        setattr(owner, name, value)
        try:
            with pytest.raises(UserInputError) as refused:
                inputs.check_numbers(config)
        finally:
            setattr(owner, name, default)
        assert inputs.flag(path) in str(refused.value) and "\n" not in str(refused.value), (value, refused.value)
    inputs.check_numbers(config)


def test_numeric_option_through_ns_train_writes_nothing(inv):
    """The numeric check runs before ns-train writes its run folder (one case through the real main)."""
    assert_refused(ns_train(inv, _set("pipeline.model.num_levels", 0)), "--pipeline.model.num-levels 0",
                   inv["root"])


def test_ratios_that_add_up_to_more_than_one(inv):
    def edit(config):
        config.pipeline.model.albedo_ratio = 0.7
        config.pipeline.model.textureless_ratio = 0.7
    assert_refused(ns_train(inv, edit), "add up to more than 1", inv["root"])


# -------------------------------------------------------------------------------------- checkpoints, runs
CHECKPOINT_EXPECTED = {"cut short": "cut short", "empty": "is empty (0 bytes)", "not a checkpoint": "cut short",
                       "stray file": "holds notes.txt"}
CHECKPOINT_COMMANDS = {
    "ns-train --load-dir": lambda i, run: ns_train(i, _set("load_dir", run.parent / "nerfstudio_models")),
    "single-image-refine coarse-config": lambda i, run: refine(i, run),
    "sin-export-mesh": lambda i, run: export_mesh(run, i["inv"] / "mesh.ply", resolution=16),
    "sin-render-turntable": lambda i, run: turntable(run, i["inv"] / "turn.gif", frames=2, resolution=8),
    "sin-evaluate": lambda i, run: evaluate(run, known_object="striped-sphere", num_views=1, geometry_views=0),
}
CHECKPOINT_CASES = [(command, broken) for command in CHECKPOINT_COMMANDS for broken in CHECKPOINT_EXPECTED
                    if not (broken == "stray file" and command in ("ns-train --load-dir",
                                                                   "single-image-refine coarse-config"))]


@pytest.mark.parametrize("command, broken", CHECKPOINT_CASES)
def test_broken_checkpoint(inv, command, broken):
    run = inv["runs"][broken]
    assert_refused(CHECKPOINT_COMMANDS[command](inv, run), CHECKPOINT_EXPECTED[broken], inv["root"])


@pytest.mark.parametrize("command", ["ns-train --load-dir", "single-image-refine coarse-config"])
def test_stray_file_beside_checkpoints_is_ignored_when_we_load(inv, command):
    """ns-train and the refine stage list step-*.ckpt files themselves: a stray file there is ignored."""
    from single_image_nerf.trainer import checkpoint_steps

    folder = inv["runs"]["stray file"].parent / "nerfstudio_models"
    assert (folder / "notes.txt").exists() and checkpoint_steps(folder) == [1]
    config = yaml.load(inv["runs"]["stray file"].read_text(), Loader=yaml.Loader)
    config.load_dir = folder if command == "ns-train --load-dir" else None
    inputs.check_training_config(config)


# ------------------------------------------------------------------------------------ command options
COMMAND_CASES = {
    "mesh: chunk 0": (lambda i: export_mesh(i["run"], i["inv"] / "m.ply", chunk=0), "--chunk 0"),
    "mesh: texture size 0": (lambda i: export_mesh(i["run"], i["inv"] / "m.obj", texture="uv", texture_size=0),
                             "--texture-size 0"),
    "mesh: resolution huge": (lambda i: export_mesh(i["run"], i["inv"] / "m.ply", resolution=100000),
                              "--resolution 100000"),
    "mesh: level nan": (lambda i: export_mesh(i["run"], i["inv"] / "m.ply", level=float("nan")), "--level nan"),
    "mesh: unknown suffix": (lambda i: export_mesh(i["run"], i["inv"] / "m.stl"), "must end in"),
    "mesh: uv into ply": (lambda i: export_mesh(i["run"], i["inv"] / "m.ply", texture="uv"), "--texture vertex"),
    "mesh: output is a folder": (lambda i: export_mesh(i["run"], i["root"] / "empty_folder", overwrite=True),
                                 "must end in"),
    "turntable: background 2": (lambda i: turntable(i["run"], i["inv"] / "t.gif", background=(2.0, 0.0, 0.0)),
                                "--background"),
    "turntable: fps huge": (lambda i: turntable(i["run"], i["inv"] / "t.gif", fps=10**9), "--fps"),
    "turntable: frames huge": (lambda i: turntable(i["run"], i["inv"] / "t.gif", frames=10**7), "--frames"),
    "turntable: resolution huge": (lambda i: turntable(i["run"], i["inv"] / "t.gif", resolution=10**6),
                                   "--resolution"),
    "turntable: radius inf": (lambda i: turntable(i["run"], i["inv"] / "t.gif", radius=float("inf")), "--radius"),
    "turntable: odd mp4 size": (lambda i: turntable(i["run"], i["inv"] / "t.mp4", resolution=9), "mp4"),
    "turntable: unknown suffix": (lambda i: turntable(i["run"], i["inv"] / "t.avi"), "must end in"),
    "evaluate: unknown object": (lambda i: evaluate(i["run"], known_object="nope"), "--known-object 'nope'"),
    "evaluate: threshold nan": (lambda i: evaluate(i["run"], f_score_threshold=float("nan")), "--f-score-threshold"),
    "evaluate: background 5": (lambda i: evaluate(i["run"], background=(5.0, 0.0, 0.0)), "--background"),
    "evaluate: points huge": (lambda i: evaluate(i["run"], num_points=10**12), "--num-points"),
    "evaluate: report under a file": (lambda i: evaluate(i["run"], known_object="striped-sphere",
                                                         output_json=i["root"] / "notes.txt" / "r.json"),
                                      "notes.txt"),
    "evaluate: report is a folder": (lambda i: evaluate(i["run"], known_object="striped-sphere",
                                                        output_json=i["root"] / "empty_folder"), "is a folder"),
}


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_command_options(inv, case):
    make, expected = COMMAND_CASES[case]
    assert_refused(make(inv), expected, inv["root"])


def _posed(root: Path, name: str, transforms, files=None) -> Path:
    folder = root / "posed" / name
    folder.mkdir(parents=True)
    if transforms is not None:
        data = transforms if isinstance(transforms, bytes) else json.dumps(transforms).encode()
        (folder / "transforms.json").write_bytes(data)
    for filename, content in (files or {}).items():
        (folder / filename).write_bytes(content)
    return folder


FRAME = {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}
POSED_CASES = {
    "no transforms.json": (None, {}, "has no transforms.json"),
    "transforms not json": (b"{x", {}, "not UTF-8 JSON"),
    "transforms latin-1": ('{"a": "\xe9"}'.encode("latin-1"), {}, "not UTF-8 JSON"),
    "no frames": ({}, {}, "lists no frames"),
    "empty frames": ({"camera_angle_x": 0.7, "frames": []}, {}, "lists no frames"),
    "image missing": ({"camera_angle_x": 0.7, "frames": [FRAME]}, {}, "is not a file"),
    "image corrupt": ({"camera_angle_x": 0.7, "frames": [FRAME]}, {"a.png": b"xx"}, "cannot be read"),
    "matrix 1x1": ({"camera_angle_x": 0.7, "frames": [dict(FRAME, transform_matrix=[[1]])]}, "disc",
                   "transform_matrix has shape"),
    "no focal length": ({"frames": [FRAME]}, "disc", "no focal length"),
    "focal length zero": ({"fl_x": 0.0, "fl_y": 0.0, "frames": [FRAME]}, "disc", "non-positive"),
    "matrix nan": ({"camera_angle_x": 0.7, "frames": [dict(FRAME, transform_matrix=[[float("nan")] * 4] * 4)]},
                   "disc", "non-finite"),
    "points.npy not npy": ({"camera_angle_x": 0.7, "frames": [FRAME]}, "disc+points", "cannot be read"),
}


@pytest.mark.parametrize("case", list(POSED_CASES))
def test_evaluate_posed_images(inv, case):
    transforms, files, expected = POSED_CASES[case]
    disc = (inv["root"] / "disc.png").read_bytes()
    if files == "disc":
        files = {"a.png": disc}
    elif files == "disc+points":
        files = {"a.png": disc, "points.npy": b"zz"}
    folder = _posed(inv["inv"], case.replace(" ", "_"), transforms, files)
    assert_refused(evaluate(inv["run"], posed_images=folder, geometry_views=0), expected, inv["root"])


PREPROCESS_CASES = {
    "hole fraction negative": (("--max-hole-fraction", "-1"), "max hole fraction"),
    "hole fraction 2": (("--max-hole-fraction", "2"), "max hole fraction"),
    "box nan": (("--box", "0", "0", "nan", "5"), "box"),
    "point nan": (("--points", "nan,3"), "points"),
    "size huge": (("--size", "100000"), "size 100000"),
    "border nan": (("--border", "nan"), "border nan"),
    "elevation nan": (("--elevation", "nan"), "elevation nan"),
    "size not a number": (("--size", "big"), "--size"),
}


@pytest.mark.parametrize("case", list(PREPROCESS_CASES))
def test_preprocess_options(inv, case):
    argv, expected = PREPROCESS_CASES[case]
    call = preprocess(str(inv["root"] / "disc.png"), "-o", str(inv["inv"] / "pp" / case.replace(" ", "_")),
                      "--mask-from", "grabcut", *argv)
    before = snapshot(inv["root"])
    from test_bad_inputs import run_case

    status, lines = run_case(call)
    assert status != 0 and lines and expected in lines[-1] and "Traceback" not in "\n".join(lines), lines
    assert snapshot(inv["root"]) == before


TI_CASES = {
    "data opaque": (lambda i: ("--data", str(i["paths"]["opaque.png"])), "fully opaque"),
    "data caption latin-1": (lambda i: ("--data", str(i["folders"]["caption latin-1"])), "not UTF-8"),
    "learning rate nan": (lambda i: ("--data", str(i["data"]), "--learning-rate", "nan"), "--learning-rate"),
    "batch size 0": (lambda i: ("--data", str(i["data"]), "--batch-size", "0"), "--batch-size"),
    "crop scale unordered": (lambda i: ("--data", str(i["data"]), "--crop-scale", "0.9", "0.5"), "--crop-scale"),
    "jitter 2": (lambda i: ("--data", str(i["data"]), "--jitter", "2"), "--jitter"),
}


@pytest.mark.parametrize("case", list(TI_CASES))
def test_textual_inversion_inputs(inv, case):
    make, expected = TI_CASES[case]
    assert_refused(textual_inversion(*make(inv), "--output", str(inv["inv"] / "tok")), expected, inv["root"])


# ----------------------------------------------------------------------------------- nothing the user had is lost
def test_interrupted_obj_export_leaves_no_mesh_without_its_texture(inv, tmp_path):
    """The .obj is written after its .mtl and texture: when the texture cannot be written, there is no .obj."""
    import trimesh

    from single_image_nerf.scripts.export_mesh import mesh_files, write_files

    mesh = trimesh.creation.box()
    mesh.visual = trimesh.visual.TextureVisuals(uv=np.zeros((len(mesh.vertices), 2)),
                                                image=Image.new("RGB", (4, 4)))
    files = mesh_files(mesh, tmp_path / "m.obj")
    texture = next(path for path in files if path.suffix == ".png")
    texture.mkdir()  # a folder where the texture goes: its write fails
    with pytest.raises(UserInputError):
        write_files(files, overwrite=True)
    assert not (tmp_path / "m.obj").exists()


def test_preprocess_overwrite_keeps_the_old_folder_until_the_new_one_is_in_place(inv, monkeypatch):
    """Replacing a preprocessed folder sets the old one aside: a failure while moving the new one in leaves the
    old folder's files under a hidden name, never nothing."""
    from single_image_nerf.preprocess import pipeline

    out = inv["inv"] / "pp_overwrite"
    args = [str(inv["root"] / "disc.png"), "-o", str(out), "--mask-from", "alpha"]
    assert preprocess(*args)() == 0
    old_rgba = (out / "rgba.png").read_bytes()
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src), Path(dst)))
        if len(calls) == 2:  # the new folder moving into place
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", failing_replace)
    with pytest.raises(OSError):
        preprocess(*args, "--overwrite")()
    monkeypatch.undo()
    kept = [p for p in out.parent.glob(f".{out.name}.old.*/{out.name}/rgba.png")]
    assert kept and kept[0].read_bytes() == old_rgba


def test_token_is_written_atomically(tmp_path):
    from single_image_nerf.guidance.textual_inversion import load_token, save_token

    path = save_token(tmp_path, "<object>", torch.ones(8), {"steps": 1})
    assert load_token(path)[0] == "<object>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.bin", "token.json"]


# ----------------------------------------------------------------------------------- what reaches the terminal
def _run_console(argv, cwd: Path):
    command = [str(Path(sys.executable).parent / argv[0])] + [str(a) for a in argv[1:]]
    if argv[0].endswith(".py"):
        command = [sys.executable, str(ROOT / argv[0])] + [str(a) for a in argv[1:]]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


CONSOLE_CASES = {
    "ns-train single-image-nerf": (lambda i: ["ns-train", "single-image-nerf", "--data", i["paths"]["opaque.png"],
                                              "--machine.device-type", "cpu", "--vis", "tensorboard",
                                              "pipeline.guidance:none"], "fully opaque"),
    "ns-train single-image-refine": (lambda i: ["ns-train", "single-image-refine", "--pipeline.model.coarse-config",
                                                i["runs"]["cut short"], "--machine.device-type", "cpu",
                                                "--vis", "tensorboard", "pipeline.guidance:none"], "cut short"),
    "ns-export": (lambda i: ["ns-export", "pointcloud", "--load-config", i["runs"]["empty"], "--output-dir",
                             i["inv"] / "pcd"], "is empty (0 bytes)"),
    "ns-viewer": (lambda i: ["ns-viewer", "--load-config", i["runs"]["stray file"], "--viewer.websocket-host",
                             "127.0.0.1"], "holds notes.txt"),
    "sin-render-turntable": (lambda i: ["sin-render-turntable", "--load-config", i["runs"]["not a checkpoint"],
                                        "--output", i["inv"] / "t.gif"], "cut short"),
    "sin-evaluate": (lambda i: ["sin-evaluate", "--load-config", i["run"], "--posed-images", i["root"] / "empty_folder"],
                     "has no transforms.json"),
    "textual_inversion.py": (lambda i: ["data_scripts/textual_inversion.py", "--data",
                                        i["folders"]["caption latin-1"], "--device", "cpu"], "not UTF-8"),
}


@pytest.mark.parametrize("case", list(CONSOLE_CASES))
def test_console_commands_print_one_line(inv, case):
    make, expected = CONSOLE_CASES[case]
    before = snapshot(inv["root"])
    result = _run_console(make(inv), inv["root"])
    lines = [line for line in re.split(r"[\r\n]", result.stderr) if line.strip() and not PROGRESS.search(line)]
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-3000:]
    after = snapshot(inv["root"])
    assert all(after.get(name) == state for name, state in before.items())


def test_tyro_parse_errors_are_usage_messages_not_tracebacks(inv):
    """A value of the wrong type is refused by the command-line parser (tyro) before anything runs."""
    result = _run_console(["sin-export-mesh", "--load-config", inv["run"], "--resolution", "many"], inv["root"])
    assert result.returncode != 0 and "Traceback" not in result.stderr and "--resolution" in result.stderr


# ----------------------------------------------------------------------------------------------- the document
def test_docs_inventory_lists_every_numeric_rule():
    text = (ROOT / "docs" / "inputs.md").read_text()
    missing = [key for key in inputs.NUMERIC_RULES if f"`{key}`" not in text]
    assert not missing, f"docs/inputs.md lacks rows for {missing}"
