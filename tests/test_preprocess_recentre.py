"""Recentring on synthetic images with known boxes, and the mask helpers it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from single_image_nerf.preprocess import PreprocessError
from single_image_nerf.preprocess.masking import (
    clean_alpha,
    clean_mask,
    fill_holes,
    grabcut_mask,
    largest_component,
    select_object_mask,
)
from single_image_nerf.preprocess.recentre import SquareCrop, mask_bbox, recentre, square_crop


def _box_alpha(height: int, width: int, box) -> np.ndarray:
    alpha = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    alpha[y0:y1, x0:x1] = 255
    return alpha


def test_mask_bbox_is_exclusive_and_rejects_empty():
    assert mask_bbox(_box_alpha(50, 80, (10, 5, 30, 45)) > 0) == (10, 5, 30, 45)
    with pytest.raises(PreprocessError, match="mask is empty"):
        mask_bbox(np.zeros((8, 8), bool))


@pytest.mark.parametrize(
    "box, border",
    [((40, 20, 120, 60), 0.15), ((0, 0, 30, 90), 0.1), ((150, 70, 200, 100), 0.25), ((60, 10, 61, 11), 0.0)],
)
def test_object_lands_centred_with_the_border(box, border):
    """Longer side spans (1 - 2·border) of the output, centred; works for boxes touching the image edges."""
    size = 128
    alpha = _box_alpha(100, 200, box)
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[alpha > 0] = (10, 200, 30)
    rgba, crop = recentre(rgb, alpha, border, size)
    assert rgba.shape == (size, size, 4) and rgba.dtype == np.uint8
    x0, y0, x1, y1 = mask_bbox(rgba[..., 3] >= 128)
    w, h = box[2] - box[0], box[3] - box[1]
    expected_long = (1 - 2 * border) * size
    assert max(x1 - x0, y1 - y0) == pytest.approx(expected_long, abs=2.5)
    assert min(x1 - x0, y1 - y0) == pytest.approx(expected_long * min(w, h) / max(w, h), abs=2.5)
    assert (x0 + x1) / 2 == pytest.approx(size / 2, abs=1.5) and (y0 + y1) / 2 == pytest.approx(size / 2, abs=1.5)
    visible = rgba[..., 3] > 0  # premultiplied resampling: no fringe of the black background, even at soft edges
    assert np.abs(rgba[visible][:, :3].astype(int) - (10, 200, 30)).max() <= 2
    assert crop.side >= max(w, h)


def test_square_crop_arithmetic_and_original_box():
    crop = square_crop((40, 20, 120, 60), border=0.1, size=256)
    assert crop == SquareCrop(x0=30, y0=-10, side=100, size=256)
    assert crop.box_in_original(scale=0.5) == (60.0, -20.0, 260.0, 180.0)
    with pytest.raises(PreprocessError, match="border"):
        square_crop((0, 0, 4, 4), border=0.5, size=64)


@pytest.mark.parametrize("box, border", [((37, 21, 121, 62), 0.15), ((3, 0, 58, 97), 0.2)])
def test_dataparser_recentres_with_the_preprocessing_window(tmp_path, box, border):
    """The dataparser's recentring (data/reference_image.py) and the preprocessing's (`recentre`) cut the same square
    window: the object's box lands on the same pixels of the output, whichever resampler each uses."""
    from PIL import Image

    from single_image_nerf.data.reference_image import read_reference

    size = 96
    alpha = _box_alpha(100, 200, box)
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[alpha > 0] = (200, 40, 90)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cutout.png")
    preprocessed, _ = recentre(rgb, alpha, border, size)
    parsed = read_reference(tmp_path / "cutout.png", size, border, recenter=True).rgba
    expected = np.array(mask_bbox(preprocessed[..., 3] >= 128))
    np.testing.assert_array_equal(np.array(mask_bbox(parsed[..., 3] >= 0.5)), expected)


def test_crop_keeps_channels_aligned_and_pads_with_zeros():
    crop = SquareCrop(x0=-2, y0=-2, side=6, size=6)
    depth = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = crop.apply(depth)
    assert out.dtype == np.float32 and out.shape == (6, 6)
    assert np.all(out[:2] == 0) and np.all(out[:, :2] == 0)
    np.testing.assert_array_equal(out[2:, 2:], depth)


def test_clean_mask_keeps_largest_component_and_fills_holes():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[12:16, 12:16] = False  # a hole
    mask[32:35, 32:35] = True  # a speck
    cleaned = clean_mask(mask)
    assert cleaned[13, 13] and not cleaned[33, 33]
    assert cleaned.sum() == 400
    assert largest_component(np.zeros((5, 5), bool)).sum() == 0


def test_fill_holes_can_keep_large_openings():
    ring = np.zeros((60, 60), bool)
    ring[5:55, 5:55] = True
    ring[20:40, 20:40] = False  # a large opening (a handle), 400 px of 2100
    ring[8, 8] = False  # a one-pixel speckle
    kept = fill_holes(ring, max_hole_fraction=0.05)
    assert kept[8, 8] and not kept[30, 30]
    assert fill_holes(ring)[30, 30]


def test_clean_alpha_keeps_soft_edges_and_drops_strays():
    alpha = np.zeros((20, 20), np.uint8)
    alpha[5:15, 5:15] = 255
    alpha[4, 5:15] = 100  # anti-aliased edge
    alpha[18, 18] = 255  # stray
    alpha[9, 9] = 0  # hole
    cleaned = clean_mask(alpha >= 128)
    out = clean_alpha(alpha, cleaned)
    assert out[4, 8] == 100 and out[18, 18] == 0 and out[9, 9] == 255


def test_select_prefers_whole_object_over_part_and_background():
    height, width = 60, 80
    whole = np.zeros((height, width), bool)
    whole[15:45, 20:60] = True
    part = np.zeros((height, width), bool)
    part[25:35, 35:45] = True
    background = ~whole
    empty = np.zeros((height, width), bool)
    assert select_object_mask([part, whole, background, empty], [0.95, 0.9, 0.97, 1.0]) == 1
    assert select_object_mask([empty], [1.0]) == -1


def test_grabcut_finds_a_plain_object():
    rng = np.random.default_rng(0)
    rgb = rng.integers(100, 130, (120, 160, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:120, :160]
    disc = (yy - 60) ** 2 + (xx - 80) ** 2 < 35**2
    rgb[disc] = (220, 40, 40)
    mask = grabcut_mask(rgb)
    overlap = (mask & disc).sum() / (mask | disc).sum()
    assert overlap > 0.9
