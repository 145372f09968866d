"""Loading of awkward photos: each gives a correct image or a one-line PreprocessError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from single_image_nerf.preprocess import PreprocessError
from single_image_nerf.preprocess.image_io import load_image


def _one_line_error(path, match: str, **kwargs) -> str:
    with pytest.raises(PreprocessError, match=match) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_plain_rgb_jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    image = load_image(path)
    assert image.rgb.shape == (30, 40, 3) and image.rgb.dtype == np.uint8
    assert image.alpha is None and image.scale == 1.0 and image.original_size == (40, 30)
    assert abs(int(image.rgb[15, 20, 0]) - 200) < 8


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels")
    _one_line_error(path, "not an image")


def test_missing_file_and_folder(tmp_path):
    _one_line_error(tmp_path / "nowhere.png", "no such file")
    _one_line_error(tmp_path, "not a file")


def test_truncated_jpeg(tmp_path):
    full, cut = tmp_path / "full.jpg", tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(full, quality=95)
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _one_line_error(cut, "truncated or corrupt")


def test_one_by_one(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (0, 0, 0)).save(path)
    _one_line_error(path, "1×1 px, too small")


def test_huge_jpeg_is_decoded_small(tmp_path):
    """10000×10000: decoded at a reduced scale (JPEG draft), never as a 300 MB buffer, then fitted to max_side."""
    path = tmp_path / "huge.jpg"
    big = Image.new("L", (10000, 10000), 90)
    big.paste(255, (4000, 3000, 6000, 7000))
    big.save(path, quality=70)
    del big
    image = load_image(path, max_side=1024)
    assert image.rgb.shape == (1024, 1024, 3)
    assert image.original_size == (10000, 10000) and image.scale == pytest.approx(0.1024)
    assert image.rgb[512, 512, 0] > 200 and image.rgb[100, 100, 0] < 120  # the bright block landed where it was
    assert any("downscaled from 10000×10000" in note for note in image.notes)


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (300, 300), 0).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # 300×300 is then over twice the limit
    _one_line_error(path, "too many pixels")


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(path)  # full magenta + yellow = red
    image = load_image(path)
    assert image.source_mode == "CMYK" and image.rgb.shape == (24, 32, 3)
    red, green, blue = image.rgb[12, 16].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_animated_gif_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = load_image(path)
    assert image.rgb.shape == (32, 32, 3)
    assert image.rgb[16, 16, 0] > 200 and image.rgb[16, 16, 1] < 60
    assert any("first frame of 3" in note for note in image.notes)


def test_exif_rotated_jpeg(tmp_path):
    """Orientation 6 (rotate 90° clockwise to display): a 60×40 file is a 40×60 upright photo."""
    path = tmp_path / "rotated.jpg"
    stored = Image.new("RGB", (60, 40), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 12, 12))  # marker at the stored top-left
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.rgb.shape == (60, 40, 3) and image.original_size == (40, 60)
    assert image.rgb[4, 35].mean() > 200 and image.rgb[4, 4].mean() < 50  # marker now at the top-right


def test_sixteen_bit_grayscale_png(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    image = load_image(path)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (48, 64, 3)
    assert image.rgb[0, 0, 0] == 0 and image.rgb[-1, -1, 0] == 255
    assert np.abs(image.rgb[..., 0].astype(int) - np.round(ramp / 257)).max() <= 1


@pytest.mark.parametrize("mode", ["P", "LA", "L", "1"])
def test_palette_la_grayscale_modes(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    if mode == "P":
        img = Image.new("P", (24, 24), 1)
        img.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
        img.paste(0, (0, 0, 24, 6))
        img.save(path, transparency=0)
    elif mode == "LA":
        img = Image.new("LA", (24, 24), (120, 255))
        img.paste((120, 0), (0, 0, 24, 6))
        img.save(path)
    else:
        Image.new(mode, (24, 24), 1).save(path)
    image = load_image(path)
    assert image.rgb.shape == (24, 24, 3) and image.rgb.dtype == np.uint8
    if mode in ("P", "LA"):
        assert image.alpha is not None and image.alpha[0, 0] == 0 and image.alpha[20, 20] == 255
    else:
        assert image.alpha is None


def test_opaque_alpha_is_ignored(tmp_path):
    path = tmp_path / "opaque.png"
    Image.new("RGBA", (20, 20), (1, 2, 3, 255)).save(path)
    image = load_image(path)
    assert image.alpha is None and any("fully opaque" in note for note in image.notes)
