"""Several photos of one object: sin-preprocess with --azimuths, the folder it writes, the dataparser reading it back,
the views' consistency (one scale, one rotation axis) and the refusals of photos that cannot go together.

The photos are renders of a known object (the two-lobed blob, whose width and horizontal middle change with azimuth)
from the project's orbit cameras, so the truth is known: the rotation axis projects to each photo's centre column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from single_image_nerf.known_objects import ReferenceView, get_known_object, reference_cameras, render_known_object
from single_image_nerf.preprocess import cli

PHOTO = 96
SIZE = 64
AZIMUTHS = (0.0, 270.0)
"""The blob's silhouette is 56 px wide with its middle 3 px left of the axis at 0, 44 px wide and 4 px right at 270."""


def _render(azimuth: float, size: int = PHOTO, fov: float = 40.0) -> np.ndarray:
    view = ReferenceView(azimuth=azimuth, size=size, fov=fov)
    rgba = render_known_object(get_known_object("two-lobed-blob"), reference_cameras(view), supersample=2)["rgba"][0]
    return (rgba.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for azimuth in AZIMUTHS:
        paths[azimuth] = root / f"blob_{azimuth:g}.png"
        Image.fromarray(_render(azimuth), mode="RGBA").save(paths[azimuth])
    opaque = np.asarray(Image.open(paths[AZIMUTHS[1]]))[..., :3]
    Image.fromarray(opaque).save(root / "opaque.png")
    small = Image.open(paths[AZIMUTHS[1]]).resize((PHOTO // 2, PHOTO // 2))  # the object half as high
    canvas = Image.new("RGBA", (PHOTO, PHOTO))
    canvas.paste(small, (PHOTO // 4, PHOTO // 4))
    canvas.save(root / "far.png")
    paths.update(opaque=root / "opaque.png", far=root / "far.png", root=root)
    return paths


def _preprocess(photos, output: Path, *flags: str) -> int:
    return cli.main([*[str(p) for p in photos], "--output", str(output), "--size", str(SIZE), "--quiet", "--no-depth",
                     "--no-caption", *flags])


def _alpha(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))[..., 3] >= 128


def _box(mask: np.ndarray):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def _placement(mask: np.ndarray):
    """(height, horizontal middle's offset from the image's centre) of a mask's box, as fractions of the image side."""
    x0, y0, x1, y1 = _box(mask)
    return (y1 - y0) / mask.shape[0], ((x0 + x1) / 2.0 - mask.shape[1] / 2.0) / mask.shape[1]


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "blob"
    assert _preprocess([photos[a] for a in AZIMUTHS], out, "--azimuths", *[f"{a:g}" for a in AZIMUTHS]) == 0
    return out


def test_several_photos_write_the_main_view_on_top_and_each_extra_view_in_its_folder(folder, photos):
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "rgba.png", "views"]
    assert sorted(p.name for p in (folder / "views" / "1").iterdir()) == ["meta.json", "rgba.png"]
    meta = json.loads((folder / "meta.json").read_text())
    assert [(v["folder"], v["azimuth_deg"]) for v in meta["views"]] == [(".", 0.0), ("views/1", 270.0)]
    assert meta["views"][1]["photo"] == str(photos[270.0])
    view_meta = json.loads((folder / "views" / "1" / "meta.json").read_text())
    assert view_meta["azimuth_deg"] == 270.0 and view_meta["input"]["path"] == str(photos[270.0].resolve())
    assert "views" not in view_meta and view_meta["elevation_deg"] == 0.0
    # Every view is cut by the same square about its photo's centre, and no object touches the border.
    assert meta["crop_box"] == view_meta["crop_box"]
    x0, y0, x1, y1 = meta["crop_box"]
    assert (x0 + x1) / 2 == pytest.approx(PHOTO / 2, abs=0.5) and (y0 + y1) / 2 == pytest.approx(PHOTO / 2, abs=0.5)
    for path in (folder / "rgba.png", folder / "views" / "1" / "rgba.png"):
        alpha = _alpha(path)
        assert alpha.shape == (SIZE, SIZE) and not alpha[:2].any() and not alpha[:, :2].any()


def test_views_share_one_scale_and_the_rotation_axis_where_independent_recentring_does_not(folder, photos, tmp_path):
    truth = {a: _placement(_render(a)[..., 3] >= 128) for a in AZIMUTHS}
    views = {0.0: folder / "rgba.png", 270.0: folder / "views" / "1" / "rgba.png"}
    common = {a: _placement(_alpha(p)) for a, p in views.items()}
    independent = {}
    for azimuth in AZIMUTHS:  # the one-photo recentring run on each photo alone, as the baseline
        assert _preprocess([photos[azimuth]], tmp_path / f"alone_{azimuth:g}") == 0
        independent[azimuth] = _placement(_alpha(tmp_path / f"alone_{azimuth:g}" / "rgba.png"))

    def scale_ratio(placements):  # the second view's object height over the first's, against the photos' own ratio
        return (placements[270.0][0] / placements[0.0][0]) / (truth[270.0][0] / truth[0.0][0])

    def axis_error(placements, azimuth):  # where the middle sits relative to the axis, in object heights, vs truth
        return abs(placements[azimuth][1] / placements[azimuth][0] - truth[azimuth][1] / truth[azimuth][0])

    assert scale_ratio(common) == pytest.approx(1.0, abs=0.04)
    assert abs(scale_ratio(independent) - 1.0) > 0.15  # cut to each object's width: the heights part by ~20%
    for azimuth in AZIMUTHS:
        assert axis_error(common, azimuth) < 0.03, azimuth
    assert max(axis_error(independent, a) for a in AZIMUTHS) > 0.07  # each middle at the centre: the axis moves

    # The common cut is exactly the orbit camera with a narrower field of view: silhouettes match the renders there.
    x0, _, x1, _ = json.loads((folder / "meta.json").read_text())["crop_box"]
    fov = math.degrees(2.0 * math.atan(math.tan(math.radians(20.0)) * (x1 - x0) / PHOTO))
    for azimuth, path in views.items():
        rendered, preprocessed = _render(azimuth, SIZE, fov)[..., 3] >= 128, _alpha(path)
        assert (rendered & preprocessed).sum() / (rendered | preprocessed).sum() > 0.93, azimuth


def test_the_dataparser_exposes_every_view_with_its_camera(folder):
    from single_image_nerf.data.camera_sampling import orbit_pose
    from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig

    config = SingleImageDataParserConfig(data=folder, image_size=32, reference_azimuth=10.0)
    outputs = config.setup().get_dataparser_outputs("train")
    views = outputs.metadata["reference_views"]
    assert [v["azimuth"] for v in views] == [10.0, 280.0] and [v["elevation"] for v in views] == [0.0, 0.0]
    assert views[0]["camera"] is outputs.cameras and len(outputs.cameras) == 1
    assert np.array_equal(views[0]["rgba"], outputs.metadata["rgba"]) and views[0]["folder"] == folder
    assert views[1]["folder"] == folder / "views" / "1" and views[1]["depth"] is None
    assert torch.allclose(views[1]["camera"].camera_to_worlds[0], orbit_pose(280.0, 0.0, 2.5), atol=1e-5)
    for view in views:
        assert view["rgba"].shape == (32, 32, 4) and int(view["camera"].width[0]) == 32
    # Every view is zoomed alike about its centre (no view is recentred on its own object): the same zoom for both,
    # and each middle keeps its place relative to the axis.
    outputs = SingleImageDataParserConfig(data=folder, image_size=SIZE).setup().get_dataparser_outputs("train")
    zooms = []
    for view, path in zip(outputs.metadata["reference_views"], (folder / "rgba.png", folder / "views/1/rgba.png")):
        (height, middle), (file_height, file_middle) = _placement(view["rgba"][..., 3] >= 0.5), _placement(_alpha(path))
        zooms.append(height / file_height)
        assert middle / height == pytest.approx(file_middle / file_height, abs=0.03)
    assert zooms[0] == pytest.approx(zooms[1], abs=0.05) and 0.95 < zooms[0] < 1.1  # 1 px in 25 is 0.04


def test_a_one_photo_folder_has_no_view_list_and_reads_as_before(photos, tmp_path):
    from single_image_nerf.data.single_image_dataparser import SingleImageDataParserConfig

    out = tmp_path / "one"
    assert _preprocess([photos[0.0]], out, "--azimuths", "0") == 0
    meta = json.loads((out / "meta.json").read_text())
    assert "views" not in meta and "azimuths" not in meta["options"] and "azimuth_deg" not in meta
    outputs = SingleImageDataParserConfig(data=out, image_size=32).setup().get_dataparser_outputs("train")
    assert "reference_views" not in outputs.metadata


def test_azimuths_are_taken_relative_to_the_first(photos, tmp_path):
    out = tmp_path / "shifted"
    assert _preprocess([photos[0.0], photos[270.0]], out, "--azimuths", "90", "0") == 0
    assert [v["azimuth_deg"] for v in json.loads((out / "meta.json").read_text())["views"]] == [0.0, 270.0]


@pytest.mark.parametrize("photo_keys, flags, expected", [
    ((0.0, 270.0), ("--azimuths", "0"), "2 photos but 1 azimuth: give one azimuth per photo"),
    ((0.0, 270.0), (), "2 photos need their cameras' azimuths: add --azimuths"),
    ((0.0, 270.0), ("--azimuths", "0", "360"), "are both at azimuth 360: two photos from one side add nothing"),
    ((0.0, 270.0), ("--azimuths", "0", "nan"), "azimuth nan is not an angle"),
    ((0.0, 270.0), ("--azimuths", "0", "90", "--elevations", "10"), "2 photos but 1 elevations"),
    ((0.0, "far"), ("--azimuths", "0", "180"), "above 1.5): the photos must show one object from about"),
    ((0.0, "opaque"), ("--azimuths", "0", "180"), "has transparency but"),
    ((0.0, 270.0), ("--azimuths", "0", "90", "--box", "0", "0", "9", "9"), "--box and --points name pixels of one"),
], ids=["count", "no azimuths", "same azimuth", "nan azimuth", "elevation count", "mask heights", "alpha mix", "box"])
def test_photos_that_cannot_go_together_are_refused_in_one_line(photos, tmp_path, capsys, photo_keys, flags,
                                                                 expected):
    out = tmp_path / "out"
    assert _preprocess([photos[k] for k in photo_keys], out, *flags) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("sin-preprocess: error: ") and "\n" not in err and expected in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_mix_is_accepted_when_every_photo_is_masked_the_same_way(photos, tmp_path):
    out = tmp_path / "grabcut"
    assert _preprocess([photos[0.0], photos["opaque"]], out, "--azimuths", "0", "180", "--mask-from", "grabcut") == 0
    assert json.loads((out / "views" / "1" / "meta.json").read_text())["mask"]["source"] == "grabcut"


# ---------------------------------------------------------------------------------------------------- sin-batch
def test_a_manifest_row_holds_several_photos_and_sin_batch_preprocesses_them_together(photos, tmp_path):
    from single_image_nerf.batch.manifest import read_manifest
    from single_image_nerf.batch.stages import ObjectPaths, ObjectPlan, Settings, command, resolve, run_stage
    from single_image_nerf.errors import UserInputError

    root = photos["root"]
    (root / "m.csv").write_text("image,azimuths,name\nblob_0.png;blob_270.png,0;270,blob\nblob_0.png,,one\n")
    (root / "m.jsonl").write_text('{"image": ["blob_0.png", "blob_270.png"], "azimuths": [0, 270], '
                                  '"elevations": [5, 5]}\n')
    csv_rows, jsonl_rows = read_manifest(str(root / "m.csv")), read_manifest(str(root / "m.jsonl"))
    assert (csv_rows[0].image, csv_rows[0].extra_images, csv_rows[0].azimuths) == (
        str(photos[0.0]), (str(photos[270.0]),), (0.0, 270.0))
    assert csv_rows[1].extra_images == () and csv_rows[1].azimuths is None and csv_rows[0].overrides() == {}
    assert jsonl_rows[0].name == "blob_0" and jsonl_rows[0].elevations == (5.0, 5.0)

    one = resolve(csv_rows[1], Settings(guidance="none", mask_from="alpha", depth=False))
    assert "azimuths" not in one.to_json() and "extra_images" not in one.to_json()  # stored plans read as before
    plan = resolve(jsonl_rows[0], Settings(guidance="none", mask_from="alpha", depth=False))
    assert ObjectPlan.from_json(plan.to_json()) == plan
    argv = command("preprocess", plan, ObjectPaths.of(Path("/out"), plan.name), "cpu")
    assert argv[1:3] == [str(photos[0.0]), str(photos[270.0])]
    assert argv[argv.index("--azimuths") + 1:][:2] == ["0.0", "270.0"] and "--elevations" in argv

    result = run_stage("preprocess", plan, tmp_path / "out")
    assert result["ok"], result["error"]
    meta = json.loads((tmp_path / "out" / plan.name / "data" / "meta.json").read_text())
    assert [v["azimuth_deg"] for v in meta["views"]] == [0.0, 270.0] and meta["elevation_deg"] == 5.0

    bad = {"image,azimuths\nblob_0.png;blob_270.png,0\n": "2 photos but 1 azimuth",
           "image,azimuths\nblob_0.png;blob_270.png,0;0\n": "are both at azimuth 0",
           "image\nblob_0.png;blob_270.png\n": "need their cameras' azimuths",
           "image,azimuths\nblob_0.png;blob_270.png,0;back\n": "azimuths must be numbers of degrees"}
    for text, message in bad.items():
        (root / "bad.csv").write_text(text)
        with pytest.raises(UserInputError, match=message) as caught:
            read_manifest(str(root / "bad.csv"))
        assert str(caught.value).startswith(f"{root / 'bad.csv'}:2: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("views, expected", [
    ("not a list", "'views' must be a list of views"),
    ([{"folder": ".", "azimuth_deg": 0}, {"folder": "views/1", "azimuth_deg": "back"}], "has no azimuth_deg number"),
    ([{"folder": ".", "azimuth_deg": 0}, {"folder": "../elsewhere", "azimuth_deg": 90}], "is not a folder holding"),
    ([{"folder": ".", "azimuth_deg": 0}, {"folder": "views/1", "azimuth_deg": 360}], "repeats azimuth 360"),
    ([{"folder": ".", "azimuth_deg": 30}, {"folder": "views/1", "azimuth_deg": 90}], "first view's azimuth_deg must"),
], ids=["not a list", "azimuth not a number", "folder outside", "repeated azimuth", "first not 0"])
def test_a_broken_view_list_is_refused_by_the_data_checks(folder, tmp_path, views, expected):
    import shutil

    from single_image_nerf.errors import UserInputError
    from single_image_nerf.inputs import check_data

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["views"] = views
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match=expected) as caught:
        check_data(broken)
    assert "\n" not in str(caught.value) and "rerun sin-preprocess" in str(caught.value)
