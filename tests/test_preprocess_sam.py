"""SAM masking through the user's loading code, with a tiny random SAM registered in segment-anything's registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from single_image_nerf.preprocess import PreprocessError
from single_image_nerf.preprocess.sam import find_sam_checkpoint, load_sam, sam_mask
from single_image_nerf.pretrained import SAM_BASE_URL
from tiny_preprocess_models import TINY_SAM, build_tiny_sam, save_tiny_sam_checkpoint

CPU = torch.device("cpu")


@pytest.fixture()
def tiny_sam_checkpoint(tmp_path, monkeypatch):
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, TINY_SAM, build_tiny_sam)
    return save_tiny_sam_checkpoint(tmp_path / "sam_tiny.pth")


@pytest.fixture()
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = rng.integers(90, 140, (90, 120, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:90, :120]
    rgb[(yy - 45) ** 2 + (xx - 60) ** 2 < 25**2] = (200, 30, 30)
    return rgb


def test_default_prompt_returns_a_candidate_mask(tiny_sam_checkpoint, photo):
    model = load_sam(TINY_SAM, tiny_sam_checkpoint, CPU)
    mask, info = sam_mask(photo, model)
    assert mask.shape == photo.shape[:2] and mask.dtype == bool
    assert info["candidates"] == 15 and len(info["prompt"]["points"]) == 5


def test_box_and_point_prompts(tiny_sam_checkpoint, photo):
    model = load_sam(TINY_SAM, tiny_sam_checkpoint, CPU)
    mask, info = sam_mask(photo, model, box=(30.0, 15.0, 90.0, 75.0))
    assert mask.shape == (90, 120) and info["candidates"] == 1 and info["prompt"]["box"] == [30.0, 15.0, 90.0, 75.0]
    mask, info = sam_mask(photo, model, points=[(60.0, 45.0)])
    assert mask.shape == (90, 120) and info["candidates"] == 3
    mask, info = sam_mask(photo, model, points=[(60.0, 45.0), (5.0, 5.0)], point_labels=[1, 0])
    assert info["prompt"]["labels"] == [1, 0]
    with pytest.raises(PreprocessError, match="one label per point"):
        sam_mask(photo, model, points=[(60.0, 45.0)], point_labels=[1, 0])


def test_missing_checkpoint_names_the_url_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "sin-cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "1")
    with pytest.raises(PreprocessError) as info:
        find_sam_checkpoint("vit_b")
    message = str(info.value)
    assert "\n" not in message and "downloads are off (SINGLE_IMAGE_NERF_OFFLINE=1)" in message
    assert f"{SAM_BASE_URL}sam_vit_b_01ec64.pth" in message and "--sam-checkpoint" in message
    assert "--mask-from grabcut" in message
    with pytest.raises(PreprocessError, match="not found; check the path"):
        find_sam_checkpoint("vit_b", tmp_path / "nope.pth")


def test_checkpoint_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "single-image-nerf").mkdir()
    cached = tmp_path / "single-image-nerf" / "sam_vit_l_0b3195.pth"
    cached.write_bytes(b"")
    assert find_sam_checkpoint("vit_l") == cached


def test_bad_checkpoints_are_one_line_errors(tmp_path, tiny_sam_checkpoint):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PreprocessError, match="not a readable SAM checkpoint"):
        load_sam(TINY_SAM, garbage, CPU)
    wrong = tmp_path / "wrong.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, wrong)
    with pytest.raises(PreprocessError, match="does not fit SAM tiny"):
        load_sam(TINY_SAM, wrong, CPU)
    with pytest.raises(PreprocessError, match="unknown SAM model 'vit_x'"):
        load_sam("vit_x", tiny_sam_checkpoint, CPU)
