"""Mesh known objects: ray-cast renders against the sphere tracer, placement conventions, colour sources, the vendored
assets at tiny sizes, and one-line failures on bad mesh files."""

import shutil

import numpy as np
import pytest
import torch
import trimesh

from single_image_nerf import mesh_objects
from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.errors import UserInputError
from single_image_nerf.known_objects import KnownObject, get_known_object, known_object_names, \
    render_known_object, sample_surface, sphere_sdf
from single_image_nerf.mesh_objects import ASSET_DIR, BOUND_RADIUS, MESH_ASSETS, load_mesh_object


def _cameras(azimuth, elevation=0.0, radius=2.5, size=32):
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
    count = azimuth.shape[0]
    return orbit_cameras(azimuth, torch.full((count,), float(elevation)), torch.full((count,), radius),
                         torch.full((count,), 40.0), size, size)


def _smooth_colour(points):
    """A colour linear in position: interpolating it over a flat triangle gives it exactly at the triangle's points."""
    return (points / (2.0 * BOUND_RADIUS) + 0.5).clamp(0.0, 1.0)


def _psnr(a, b):
    return float(-10.0 * torch.log10(((a - b) ** 2).mean()))


def test_ray_cast_mesh_matches_the_sphere_traced_sphere(tmp_path):
    """A fine icosphere written as a PLY with vertex colours, read back and ray-cast, renders the analytic sphere of
    the same radius and colour as the sphere tracer does: coverage, colour and depth."""
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=1.0)
    placed = np.asarray(sphere.vertices) * BOUND_RADIUS
    colours = (_smooth_colour(torch.from_numpy(placed).float()).numpy() * 255.0 + 0.5).astype(np.uint8)
    sphere.visual = trimesh.visual.ColorVisuals(sphere, vertex_colors=colours)
    sphere.export(tmp_path / "sphere.ply")
    mesh = get_known_object(str(tmp_path / "sphere.ply"))
    analytic = KnownObject("sphere", lambda p: sphere_sdf(p, BOUND_RADIUS), _smooth_colour, BOUND_RADIUS + 0.01, "")
    cameras = _cameras([0.0, 130.0], elevation=25.0)
    cast, traced = render_known_object(mesh, cameras, supersample=4), render_known_object(analytic, cameras, 4)
    alpha = traced["rgba"][..., 3]
    assert 0.15 < alpha.mean() < 0.6
    assert (cast["rgba"][..., 3] - alpha).abs().mean() < 0.01
    inside = (alpha > 0.999) & (cast["rgba"][..., 3] > 0.999)
    assert _psnr(cast["rgba"][..., :3][inside], traced["rgba"][..., :3][inside]) > 40.0
    assert (cast["depth"][inside] - traced["depth"][inside]).abs().max() < 0.01


def test_front_azimuth_turns_the_mesh_about_up():
    """`football@90` seen from azimuth 0 is the football seen from azimuth 90."""
    turned, plain = get_known_object("football@90"), get_known_object("football")
    assert turned.name == "football@90"
    a = render_known_object(turned, _cameras([0.0], size=24), supersample=1)["rgba"]
    b = render_known_object(plain, _cameras([90.0], size=24), supersample=1)["rgba"]
    assert (a - b).abs().mean() < 0.01
    c = render_known_object(plain, _cameras([0.0], size=24), supersample=1)["rgba"]
    assert (a - c).abs().mean() > 0.05  # the pattern differs between the two sides


def _truck_regions(rgba):
    """(mean column of the logo's saturated blue/green pixels, mean row of dark pixels) as fractions of the
    silhouette's box, and the silhouette's width over its height."""
    alpha = rgba[..., 3] > 0.5
    rows, columns = torch.nonzero(alpha, as_tuple=True)
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    rgb = rgba[..., :3]
    saturated = alpha & ((rgb.max(-1).values - rgb.min(-1).values) > 0.3)
    dark = alpha & (rgb.max(-1).values < 0.2)
    s_rows, s_columns = torch.nonzero(saturated, as_tuple=True)
    d_rows, _ = torch.nonzero(dark, as_tuple=True)
    logo = float((s_columns.float().mean() - left) / (right - left))
    wheels = float((d_rows.float().mean() - top) / (bottom - top))
    return logo, wheels, float((right - left) / (bottom - top))


def test_milk_truck_stands_up_side_on_with_its_cab_left():
    """From azimuth 0 the truck is seen side-on (wider than tall), wheels below, its cab on the left (the tank's
    logo on the right), as the asset's README says; from azimuth 180 the logo is on the left."""
    truck = get_known_object("milk-truck")
    rgba = render_known_object(truck, _cameras([0.0, 180.0, 270.0], elevation=10.0, size=64), supersample=2)["rgba"]
    logo, wheels, aspect = _truck_regions(rgba[0])
    assert logo > 0.6 and wheels > 0.5 and aspect > 1.4
    back_logo, _, _ = _truck_regions(rgba[1])
    assert back_logo < 0.45
    _, _, end_on = _truck_regions(rgba[2])  # from azimuth 270 (-Y) the cab's front, narrower than tall
    assert end_on < 1.2


def test_football_texture_and_bound():
    """The OBJ's palette texture gives black and white patches; the mesh fills the scene's bound."""
    ball = get_known_object("football")
    rgb = render_known_object(ball, _cameras([0.0], size=32), supersample=1)["rgba"][0]
    covered = rgb[..., 3] > 0.99
    brightness = rgb[..., :3][covered].mean(-1)
    assert (brightness < 0.2).float().mean() > 0.1 and (brightness > 0.8).float().mean() > 0.4
    points = sample_surface(ball, 2000, seed=1)
    assert points.shape == (2000, 3)
    assert abs(float(points.norm(dim=-1).max()) - BOUND_RADIUS) < 0.02
    assert float(ball.sdf(points).abs().max()) < 1e-4  # samples lie on the mesh's own surface


def test_inside_and_outside_of_an_open_mesh():
    """The football is not watertight; its signed distance is still negative inside and positive outside."""
    ball = get_known_object("football")
    assert not load_mesh_object(ASSET_DIR / MESH_ASSETS["football"].file).mesh.is_watertight
    inside = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.1, 0.1], [-0.3, 0.2, -0.2]])
    outside = torch.tensor([[0.0, 0.0, 0.9], [0.7, 0.1, 0.0], [-0.5, -0.5, 0.3]])
    assert (ball.sdf(inside) < 0).all() and (ball.sdf(outside) > 0).all()


def test_names_and_package_data():
    """The assets are registered by name, their files and licences ship inside the package."""
    assert {"milk-truck", "football"} <= set(known_object_names())
    for asset in MESH_ASSETS.values():
        assert (ASSET_DIR / asset.file).is_file()
    readme = (ASSET_DIR / "README.md").read_text()
    assert "CC BY 4.0" in readme and "zlib" in readme
    assert (ASSET_DIR / "soccerball" / "LICENSE.txt").is_file()


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_bad_mesh_files_end_in_one_line(tmp_path, monkeypatch):
    not_mesh = tmp_path / "photo.glb"
    not_mesh.write_bytes(b"\x89PNG\r\n\x1a\n not a mesh at all")
    with pytest.raises(UserInputError) as error:
        load_mesh_object(not_mesh)
    assert "is not a mesh" in _one_line(error)

    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing here\n")
    with pytest.raises(UserInputError) as error:
        load_mesh_object(empty)
    assert "no faces" in _one_line(error)

    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(50, 3))).export(cloud)
    with pytest.raises(UserInputError) as error:
        load_mesh_object(cloud)
    assert "point cloud (50 points" in _one_line(error)

    with pytest.raises(UserInputError) as error:
        load_mesh_object(tmp_path / "missing.glb")
    assert "no such mesh file" in _one_line(error)

    monkeypatch.setattr(mesh_objects, "MAX_FACES", 1000)
    with pytest.raises(UserInputError) as error:
        load_mesh_object(ASSET_DIR / MESH_ASSETS["football"].file)
    assert "9,048 faces, over the limit of 1,000" in _one_line(error)


def test_missing_texture_warns_and_falls_back_to_base_colour(tmp_path, capsys):
    for name in ("soccerball.obj", "soccerball.mtl"):
        shutil.copy(ASSET_DIR / "soccerball" / name, tmp_path / name)
    ball = load_mesh_object(tmp_path / "soccerball.obj")
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "colors16.png" in warning and "missing" in warning
    colour = ball.colour(ball.sample(200))
    assert torch.allclose(colour, torch.ones_like(colour))  # the MTL's Kd is white


def test_sin_evaluate_takes_a_mesh_path(tmp_path):
    from pathlib import Path

    from single_image_nerf.scripts.evaluate import EvaluateConfig, check_inputs

    check_inputs(EvaluateConfig(load_config=Path("unused"), known_object="milk-truck"))
    check_inputs(EvaluateConfig(load_config=Path("unused"), known_object=str(ASSET_DIR / MESH_ASSETS["football"].file)))
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nnonsense\n")
    with pytest.raises(UserInputError) as error:
        check_inputs(EvaluateConfig(load_config=Path("unused"), known_object=str(bad)))
    assert str(bad) in _one_line(error)
    with pytest.raises(UserInputError) as error:
        check_inputs(EvaluateConfig(load_config=Path("unused"), known_object="nope"))
    assert "milk-truck" in _one_line(error)


def test_oracle_prior_takes_a_mesh_object():
    from single_image_nerf.guidance.oracle import oracle_targets

    target = oracle_targets(get_known_object("football"), _cameras([45.0], size=16), 16, 16, (1.0, 1.0, 1.0), 2)
    assert target.shape == (1, 3, 16, 16) and float(target.min()) < 0.2
