"""Captions in `sin-batch`: the captioning model runs only where a prior reads the caption; `--caption TEXT` and
`--no-caption` apply to every object a manifest row does not caption; and a folder of photos runs to the end with no
network and no weights at all (GrabCut masks, no depth, no caption, no prior)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from single_image_nerf.batch.manifest import ObjectRow
from single_image_nerf.batch.stages import (PRIORS_READING_TEXT, PRIORS_WITHOUT_TEXT, STAGES, ObjectPaths, Settings,
                                            caption_note, command, resolve, run_stage)
from single_image_nerf.errors import UserInputError

SIN_BATCH = str(Path(sys.executable).parent / "sin-batch")


def write_photo(path: Path, colour, size: int = 80) -> Path:
    """A photo without transparency: a shaded disc on a plain light background (what GrabCut separates)."""
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    inside = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.3 * size) ** 2
    image = np.full((size, size, 3), 235, np.uint8)
    shade = (0.6 + 0.4 * cols / size)[..., None]
    image[inside] = np.clip(np.asarray(colour, np.float32) * shade, 0, 255).astype(np.uint8)[inside]
    Image.fromarray(image).save(path, quality=95)
    return path


def offline_environment(root: Path) -> dict:
    """No downloads and empty caches: any model a command asks for fails at once."""
    (root / "empty-hf").mkdir(exist_ok=True)
    return dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                SINGLE_IMAGE_NERF_OFFLINE="1", HF_HUB_CACHE=str(root / "empty-hf"),
                SINGLE_IMAGE_NERF_CACHE=str(root / "empty-cache"))


def row(**values) -> ObjectRow:
    return ObjectRow(name="mug", image="/photos/mug.jpg", **values)


def preprocess_argv(plan) -> list:
    return command("preprocess", plan, ObjectPaths.of(Path("/out"), plan.name), "cpu")


@pytest.mark.parametrize("prior", PRIORS_WITHOUT_TEXT)
def test_a_prior_that_reads_no_text_runs_no_captioner(prior):
    plan = resolve(row(), Settings(guidance=prior))
    assert not plan.captioner and plan.caption is None
    assert "--no-caption" in preprocess_argv(plan) and "--caption" not in preprocess_argv(plan)
    assert caption_note([plan]) == f"captions: no captioning model runs for 1 of 1 object (the {prior} prior reads " \
        "no text)"


@pytest.mark.parametrize("prior", (None,) + PRIORS_READING_TEXT)
def test_a_prior_that_reads_text_gets_a_caption(prior):
    plan = resolve(row(), Settings(guidance=prior))  # None: the default prior, Stable Diffusion
    assert plan.captioner and caption_note([plan]) is None
    assert "--no-caption" not in preprocess_argv(plan) and "--caption" not in preprocess_argv(plan)
    given = resolve(row(), Settings(guidance=prior, caption="a red mug"))
    assert not given.captioner and preprocess_argv(given)[-2:] == ["--caption", "a red mug"]
    with pytest.raises(UserInputError, match=f"the {prior or 'stable-diffusion'} prior needs text and --no-caption "
                                             "leaves it none; give --caption TEXT") as refused:
        resolve(row(), Settings(guidance=prior, captioner=False))
    assert "\n" not in str(refused.value) and "object 'mug'" in str(refused.value)


def test_a_manifest_row_wins_over_the_command_line():
    plan = resolve(row(caption="a blue ball"), Settings(caption="a red mug"))
    assert plan.caption == "a blue ball" and preprocess_argv(plan)[-2:] == ["--caption", "a blue ball"]
    plan = resolve(row(caption="a blue ball"), Settings(captioner=False))  # --no-caption: the row's caption stays
    assert plan.caption == "a blue ball" and "--no-caption" not in preprocess_argv(plan)
    plan = resolve(row(guidance="zero123"), Settings(guidance="stable-diffusion"))
    assert not plan.captioner and "--no-caption" in preprocess_argv(plan)
    prompted = resolve(row(prompt="a red mug"), Settings(captioner=False))  # the prompt is the prior's text
    assert not prompted.captioner and "a prompt is given" in caption_note([prompted, plan])
    with pytest.raises(UserInputError, match="unknown prior 'dreamfusion'; choose one of stable-diffusion"):
        resolve(row(guidance="dreamfusion"), Settings())


def test_the_priors_sin_batch_knows_are_the_projects():
    """The table of priors that read text matches the configs: exactly those with a prompt read text."""
    import dataclasses
    import typing

    from single_image_nerf.guidance.registry import AnyGuidanceConfig
    from single_image_nerf.pipeline import SingleImagePipelineConfig

    def reads_text(config_class, depth: int = 0) -> bool:
        hints = typing.get_type_hints(config_class)
        return any(f.name == "prompt" or (depth < 2 and dataclasses.is_dataclass(hints.get(f.name)) and
                                          reads_text(hints[f.name], depth + 1))
                   for f in dataclasses.fields(config_class))

    priors = {}
    for member in typing.get_args(AnyGuidanceConfig):
        config_class, *marks = typing.get_args(member)
        name = next(mark.name for mark in marks if hasattr(mark, "name"))
        priors[name] = reads_text(config_class)
    assert {name for name, text in priors.items() if text} == set(PRIORS_READING_TEXT)
    assert {name for name, text in priors.items() if not text} == set(PRIORS_WITHOUT_TEXT)
    default = SingleImagePipelineConfig().guidance
    assert reads_text(type(default)) and type(default).__name__ == "StableDiffusionGuidanceConfig"


def test_zero123_preprocessing_asks_for_no_caption_model(tmp_path):
    photo = write_photo(tmp_path / "mug.jpg", (200, 60, 40))
    plan = resolve(ObjectRow(name="mug", image=str(photo)), Settings(guidance="zero123", mask_from="grabcut",
                                                                     depth=False, tiny=True))
    result = run_stage("preprocess", plan, tmp_path / "out", env=offline_environment(tmp_path))
    assert result["ok"], result["error"]
    meta = json.loads((tmp_path / "out" / "mug" / "data" / "meta.json").read_text())
    assert meta["caption"] is None and meta["models"]["caption"] is None and meta["options"]["caption"] is False
    assert not (tmp_path / "out" / "mug" / "data" / "caption.txt").exists()


def test_a_folder_of_photos_runs_to_the_end_offline(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "mug.jpg", (200, 60, 40))
    write_photo(photos / "ball.jpg", (40, 80, 210))
    out = tmp_path / "out"
    result = subprocess.run([SIN_BATCH, str(photos), "--output", str(out), "--tiny", "--steps", "4", "--no-caption",
                             "--no-depth", "--guidance", "none", "--mask-from", "grabcut", "--max-concurrent", "2",
                             "--quiet"], env=offline_environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "captions: no captioning model runs for 2 of 2 objects (the none prior reads no text)" in result.stdout
    assert "2 done, 0 failed, 0 unfinished (of 2 objects)" in result.stdout
    for name in ("mug", "ball"):
        paths = ObjectPaths.of(out, name)
        assert all(Path(path).exists() for stage in STAGES for path in paths.outputs(stage).values())
        assert not (paths.data / "caption.txt").exists() and not (paths.data / "depth.npy").exists()
