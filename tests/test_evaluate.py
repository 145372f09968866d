"""The evaluation command's pieces, on a stand-in model that renders a known object exactly (or wrongly)."""

import json
from types import SimpleNamespace

import pytest
import torch

from single_image_nerf.known_objects import ReferenceView, get_known_object, reference_cameras, \
    render_known_object, write_posed_views, write_reference_folder
from single_image_nerf.scripts import evaluate as E


class ObjectModel(torch.nn.Module):
    """Renders a known object like a nerfstudio model's get_outputs_for_camera (on a grey background)."""

    def __init__(self, obj, spin: float = 0.0):
        super().__init__()
        self.obj, self.spin, self.device = obj, spin, torch.device("cpu")

    def get_outputs_for_camera(self, camera):
        if self.spin:  # a wrong model: the object turned about +Z by `spin` degrees
            angle = torch.deg2rad(torch.tensor(self.spin))
            rotation = torch.tensor([[torch.cos(angle), -torch.sin(angle), 0.0],
                                     [torch.sin(angle), torch.cos(angle), 0.0], [0.0, 0.0, 1.0]])
            camera = camera.to("cpu")
            camera.camera_to_worlds = torch.cat([rotation.T @ camera.camera_to_worlds[..., :3],
                                                 (rotation.T @ camera.camera_to_worlds[..., 3:])], dim=-1)
        out = render_known_object(self.obj, camera, supersample=4)
        grey = torch.full((3,), 0.5)
        alpha = out["rgba"][0, ..., 3:]
        return {"rgb": out["rgba"][0, ..., :3] * alpha + (1 - alpha) * grey, "accumulation": alpha,
                "depth": out["distance"][0, ..., None], "background": grey}


def _pipeline(obj, data_dir=None, spin=0.0, size=32):
    view = ReferenceView(size=size)
    cameras = reference_cameras(view)
    rgba = render_known_object(obj, cameras, supersample=4)["rgba"][0]
    outputs = SimpleNamespace(cameras=cameras, metadata={"rgba": rgba.numpy(), "data_dir": data_dir})
    return SimpleNamespace(model=ObjectModel(obj, spin), datamanager=SimpleNamespace(train_dataparser_outputs=outputs))


def _config(**overrides):
    options = dict(load_config="run/config.yml", num_views=4, geometry_views=6, geometry_resolution=32,
                   num_points=3000, clip_model=None)
    options.update(overrides)
    return E.EvaluateConfig(**options)


def test_held_out_views_avoid_the_reference_and_split_front_and_back():
    offsets = E.held_out_azimuth_offsets(8)
    assert torch.allclose(offsets, torch.arange(8) * 45.0 + 22.5)
    cameras = E.held_out_cameras(reference_cameras(ReferenceView(azimuth=30.0, size=16)), 8, None, None)
    wrapped = E.azimuth_offset(cameras, 30.0)
    assert torch.allclose(wrapped.abs().sort().values, torch.tensor([22.5, 22.5, 67.5, 67.5, 112.5, 112.5, 157.5,
                                                                      157.5]), atol=1e-3)
    spread = E.sphere_cameras(reference_cameras(ReferenceView(size=16)), 10, 16)
    _, elevation, radius = E.pose_angles(spread.camera_to_worlds)
    assert elevation.max() > 60 and elevation.min() < -60 and torch.allclose(radius, torch.full((10,), 2.5))


def test_a_perfect_model_scores_perfectly(tmp_path, capsys):
    obj = get_known_object("box")
    folder = write_reference_folder(obj, tmp_path / "box", ReferenceView(size=32))
    report = E.evaluate_pipeline(_pipeline(obj, data_dir=folder), _config())  # object found through meta.json
    assert report["ground_truth"] == "box"
    assert [v["name"] for v in report["views"]][0] == "reference" and len(report["views"]) == 5
    assert report["summary"]["held_out"]["psnr"] > 30 and report["summary"]["back"]["ssim"] > 0.95
    assert report["summary"]["reference"]["psnr"] > 30
    assert report["summary"]["front"]["lpips"] is None or report["summary"]["front"]["lpips"] < 0.05
    geometry = report["geometry"]
    assert geometry["f_score"] > 0.95 and geometry["chamfer"] < 0.02
    E.write_report(report, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["geometry"]["points"] == geometry["points"]
    capsys.readouterr()
    E.print_report(report)
    printed = capsys.readouterr().out
    assert "vs box" in printed and "mean: held_out" in printed and "F-score" in printed
    assert f"{report['summary']['held_out']['psnr']:.2f}" in printed and f"{geometry['f_score']:.3f}" in printed


def test_a_turned_model_scores_worse_on_the_back(tmp_path):
    obj = get_known_object("striped-sphere")
    good = E.evaluate_pipeline(_pipeline(obj), _config(known_object="striped-sphere"))
    wrong = E.evaluate_pipeline(_pipeline(obj, spin=90.0), _config(known_object="striped-sphere"))
    assert wrong["summary"]["back"]["psnr"] < good["summary"]["back"]["psnr"] - 10
    assert wrong["geometry"]["f_score"] > 0.9  # the shape of a sphere does not change when it turns


def test_posed_images_ground_truth(tmp_path):
    obj = get_known_object("torus")
    from single_image_nerf.data.camera_sampling import orbit_cameras

    cameras = orbit_cameras(torch.tensor([100.0, 200.0]), torch.tensor([20.0, -10.0]), torch.tensor([2.5, 2.5]),
                            torch.tensor([40.0, 40.0]), 24, 24)
    folder = write_posed_views(obj, tmp_path / "posed", cameras, points=2000)
    posed = E.read_posed_images(folder)
    assert torch.allclose(posed.cameras.camera_to_worlds, cameras.camera_to_worlds, atol=1e-6)
    assert torch.allclose(posed.cameras.fx, cameras.fx)
    report = E.evaluate_pipeline(_pipeline(obj), _config(posed_images=folder))
    assert len(report["views"]) == 3 and report["summary"]["held_out"]["psnr"] > 30
    assert report["geometry"]["f_score"] > 0.9


def test_no_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="known-object"):
        E.evaluate_pipeline(_pipeline(get_known_object("box")), _config())


class StripedModel(torch.nn.Module):
    """Renders alternate columns black and white at whatever resolution it is asked for."""

    device = torch.device("cpu")

    def get_outputs_for_camera(self, camera):
        height, width = int(camera.height), int(camera.width)
        stripes = (torch.arange(width) % 2).float().expand(height, width)[..., None].expand(height, width, 3)
        return {"rgb": stripes, "accumulation": torch.ones(height, width, 1), "depth": torch.ones(height, width, 1)}


def test_supersampled_renders_average_each_pixel_over_its_area():
    cameras = reference_cameras(ReferenceView(size=8))
    plain = E.render_run(StripedModel(), cameras, (1.0, 1.0, 1.0))
    assert plain["rgb"].shape == (1, 3, 8, 8) and set(plain["rgb"].unique().tolist()) == {0.0, 1.0}
    averaged = E.render_run(StripedModel(), cameras, (1.0, 1.0, 1.0), supersample=2)
    assert averaged["rgb"].shape == (1, 3, 8, 8) and torch.allclose(averaged["rgb"], torch.full((1, 3, 8, 8), 0.5))
    assert int(cameras.width[0, 0]) == 8  # the caller's cameras are left as they were

