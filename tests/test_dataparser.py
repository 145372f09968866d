"""The single-image dataparser: which images it accepts, what it refuses, and the reference camera's geometry."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig
from single_image_nerf.errors import UserInputError


def parse(path: Path, **options):
    return SingleImageDataParserConfig(data=path, **options).setup().get_dataparser_outputs("train")


def rgba_with_box(height: int, width: int, box, colour=(255, 0, 0)) -> np.ndarray:
    image = np.zeros((height, width, 4), np.uint8)
    row0, col0, row1, col1 = box
    image[row0:row1, col0:col1, :3] = colour
    image[row0:row1, col0:col1, 3] = 255
    return image


def test_rgba_image_is_recentred_with_the_border(tmp_path):
    path = tmp_path / "object.png"
    Image.fromarray(rgba_with_box(100, 160, (10, 100, 40, 160))).save(path)  # a 30x60 box off to the right
    outputs = parse(path, image_size=100, border=0.2)
    rgba = outputs.metadata["rgba"]
    assert rgba.shape == (100, 100, 4) and rgba.dtype == np.float32
    rows, cols = np.nonzero(rgba[..., 3] > 0.5)
    assert (cols.min() + cols.max()) / 2 == pytest.approx(49.5, abs=1.0)  # centred
    assert (rows.min() + rows.max()) / 2 == pytest.approx(49.5, abs=1.0)
    assert cols.max() - cols.min() + 1 == pytest.approx(60, abs=2)  # longest side fills 1 - 2 * border
    assert np.allclose(rgba[rows, cols, :3], [1.0, 0.0, 0.0], atol=0.02)  # no darkened fringe inside
    assert len(outputs.cameras) == 1 and outputs.alpha_color is None


def test_rgb_image_without_mask_is_refused_with_one_line(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(path)
    with pytest.raises(UserInputError, match="no alpha channel.*preprocess_image.py") as error:
        parse(path)
    assert "\n" not in str(error.value.code)


@pytest.mark.parametrize("content", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_non_images_are_refused(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="not a readable image"):
        parse(path)


def test_missing_file_and_folder_without_image(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        parse(tmp_path / "nothing.png")
    with pytest.raises(UserInputError, match="folder without rgba.png"):
        parse(tmp_path)


def test_empty_mask_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(path)
    with pytest.raises(UserInputError, match="mask is empty"):
        parse(path)


def test_grayscale_with_alpha(tmp_path):
    image = np.zeros((32, 32, 2), np.uint8)
    image[8:24, 8:24] = (200, 255)
    path = tmp_path / "gray.png"
    Image.fromarray(image, mode="LA").save(path)
    rgba = parse(path, image_size=32).metadata["rgba"]
    assert rgba.shape == (32, 32, 4)
    inside = rgba[..., 3] > 0.99
    assert np.allclose(rgba[inside, :3], 200 / 255, atol=0.01)


def test_sixteen_bit_png(tmp_path):
    import cv2

    image = np.zeros((40, 40, 4), np.uint16)
    image[10:30, 10:30] = (0, 30000, 65535, 65535)  # BGRA for OpenCV: blue 30000/65535, red 1.0
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), image)
    rgba = parse(path, image_size=40).metadata["rgba"]
    inside = rgba[..., 3] > 0.99
    assert inside.sum() > 100
    assert np.allclose(rgba[inside, :3].mean(0), [1.0, 30000 / 65535, 0.0], atol=0.02)


def test_one_pixel_image_is_refused_in_one_line(tmp_path):
    """A 1x1 image holds no object to reconstruct (and its one opaque pixel marks no mask): docs/inputs.md."""
    from single_image_nerf.errors import UserInputError

    path = tmp_path / "dot.png"
    Image.fromarray(np.array([[[10, 200, 30, 255]]], np.uint8)).save(path)
    with pytest.raises(UserInputError, match="at least 16 pixels"):
        parse(path, image_size=16)


def test_very_large_image_is_downscaled(tmp_path):
    path = tmp_path / "huge.png"
    Image.fromarray(rgba_with_box(6000, 6000, (1000, 2000, 5000, 4000))).save(path, compress_level=1)
    rgba = parse(path, image_size=64).metadata["rgba"]
    assert rgba.shape == (64, 64, 4)
    assert rgba[..., 3].mean() == pytest.approx(0.7 * 0.35, abs=0.02)  # a 2:1 box whose long side fills 70%


def test_impossible_options_are_refused(tmp_path):
    path = tmp_path / "object.png"
    Image.fromarray(rgba_with_box(20, 20, (5, 5, 15, 15))).save(path)
    for options, message in [({"reference_fov": 180.0}, "fov"), ({"reference_radius": -1.0}, "radius must be"),
                             ({"border": 0.5}, "border"), ({"reference_radius": 1.2}, "inside the scene box")]:
        with pytest.raises(UserInputError, match=message):
            parse(path, **options)


def test_preprocessed_folder_with_depth_and_caption(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(rgba_with_box(50, 50, (10, 10, 40, 40))).save(folder / "rgba.png")
    disparity = np.zeros((50, 50), np.float32)
    disparity[10:40, 10:40] = np.linspace(1.0, 2.0, 30)[None, :]
    np.save(folder / "depth.npy", disparity)
    (folder / "meta.json").write_text(json.dumps({"depth_convention": "disparity"}))
    (folder / "caption.txt").write_text("a red cube\n")
    outputs = parse(folder, image_size=50, recenter=False)
    assert outputs.metadata["caption"] == "a red cube"
    assert outputs.metadata["data_dir"] == folder
    depth = outputs.metadata["depth"]
    assert depth.shape == (50, 50)
    row = depth[25, 12:38]
    assert torch.isfinite(row).all() and bool((row[1:] <= row[:-1] + 1e-6).all())  # disparity rises: depth falls
    assert torch.isnan(depth[0, 0])


def test_depth_of_another_size_is_refused(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(rgba_with_box(50, 50, (10, 10, 40, 40))).save(folder / "rgba.png")
    np.save(folder / "depth.npy", np.ones((20, 20), np.float32))
    with pytest.raises(UserInputError, match="same image"):
        parse(folder)


def test_reference_camera_geometry(tmp_path):
    path = tmp_path / "object.png"
    Image.fromarray(rgba_with_box(64, 64, (16, 16, 48, 48))).save(path)
    outputs = parse(path, image_size=64, reference_azimuth=30.0, reference_elevation=15.0, reference_radius=2.5,
                    reference_fov=40.0)
    cameras = outputs.cameras
    # The origin projects to the image centre.
    c2w = torch.cat([cameras.camera_to_worlds[0], torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
    origin_in_camera = torch.linalg.inv(c2w) @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    x, y, z = origin_in_camera[:3]
    assert float(z) < 0  # in front of the camera (it looks down -Z)
    u = float(cameras.cx[0]) + float(cameras.fx[0]) * float(x) / float(-z)
    v = float(cameras.cy[0]) - float(cameras.fy[0]) * float(y) / float(-z)
    assert (u, v) == pytest.approx((32.0, 32.0), abs=1e-3)
    # Every object pixel's ray hits the scene box.
    rays = cameras.generate_rays(camera_indices=0, keep_shape=True)
    inside = torch.from_numpy(outputs.metadata["rgba"][..., 3] > 0.5)
    origins, directions = rays.origins[inside], rays.directions[inside]
    aabb = outputs.scene_box.aabb
    t0 = (aabb[0] - origins) / directions
    t1 = (aabb[1] - origins) / directions
    near = torch.minimum(t0, t1).max(-1).values
    far = torch.maximum(t0, t1).min(-1).values
    assert bool((near < far).all()) and bool((far > 0).all())
