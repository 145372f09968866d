"""Known objects: SDFs, the sphere-tracing renderer in the world convention, surface samples and data folders."""

import json
import math

import numpy as np
import pytest
import torch

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.known_objects import (
    KNOWN_OBJECTS,
    ReferenceView,
    composite,
    get_known_object,
    render_known_object,
    sample_surface,
    write_posed_views,
    write_reference_folder,
)


def _cameras(azimuth, elevation=0.0, radius=2.0, fov=40.0, size=32):
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
    count = azimuth.shape[0]
    return orbit_cameras(
        azimuth, torch.full((count,), float(elevation)), torch.full((count,), radius), torch.full((count,), fov),
        size, size,
    )


@pytest.mark.parametrize("name", sorted(KNOWN_OBJECTS))
def test_sdf_is_signed_and_never_overestimates(name):
    obj = get_known_object(name)
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(4000, 3, generator=generator) * 2 - 1) * 1.2
    others = (torch.rand(4000, 3, generator=generator) * 2 - 1) * 1.2
    # 1-Lipschitz: the distance bound is safe to sphere-trace.
    assert ((obj.sdf(points) - obj.sdf(others)).abs() <= (points - others).norm(dim=-1) + 1e-5).all()
    assert (obj.sdf(torch.tensor([[1.5, 1.5, 1.5]])) > 0).all()
    surface = sample_surface(obj, 500)
    assert surface.shape == (500, 3)
    assert obj.sdf(surface).abs().max() < 1e-4
    assert surface.norm(dim=-1).max() <= obj.bound_radius
    colours = obj.colour(surface)
    assert colours.shape == (500, 3) and colours.min() >= 0 and colours.max() <= 1


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="striped-sphere"):
        get_known_object("teapot")


def test_sphere_silhouette_and_depth_match_the_analytic_projection():
    obj = get_known_object("striped-sphere")
    size, fov, distance, radius = 64, 40.0, 2.0, 0.5
    out = render_known_object(obj, _cameras([0.0, 130.0], radius=distance, fov=fov, size=size), supersample=4)
    focal = 0.5 * size / math.tan(math.radians(fov / 2))
    projected = focal * math.tan(math.asin(radius / distance))
    for alpha in out["rgba"][..., 3]:
        assert alpha.sum().item() == pytest.approx(math.pi * projected**2, rel=0.01)
    centre = out["depth"][0, size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1]
    assert centre.mean().item() == pytest.approx(distance - radius, abs=2e-3)
    assert (out["depth"][out["rgba"][..., 3] == 0] == 0).all()


def test_depth_points_lie_on_the_surface():
    """Rays from nerfstudio's cameras, pushed by the rendered distance, land on the SDF's zero set."""
    obj = get_known_object("box")
    cameras = _cameras([35.0], elevation=25.0)
    out = render_known_object(obj, cameras, supersample=1)
    rays = cameras.generate_rays(camera_indices=0, keep_shape=True)
    directions = torch.nn.functional.normalize(rays.directions, dim=-1)
    hit = out["rgba"][0, ..., 3] > 0
    points = (rays.origins + out["distance"][0, ..., None] * directions)[hit]
    assert hit.sum() > 50
    assert obj.sdf(points).abs().max() < 1e-3
    forward = -cameras.camera_to_worlds[0, :, 2]
    assert torch.allclose(out["depth"][0][hit], (out["distance"][0, ..., None] * directions @ forward)[hit], atol=1e-4)


def test_world_convention_faces_and_image_axes():
    """The box's +X face (red) faces the reference camera at azimuth 0, +Y (green) the camera at azimuth 90 and
    +Z (blue) a camera above; at azimuth 45 the +X face is on the image's left and +Y on its right."""
    obj = get_known_object("box")
    out = render_known_object(obj, _cameras([0.0, 90.0, 45.0, 0.0][:3]), supersample=1)
    top = render_known_object(obj, _cameras([0.0], elevation=85.0), supersample=1)
    red, green, blue = torch.tensor([0.9, 0.15, 0.15]), torch.tensor([0.15, 0.75, 0.2]), torch.tensor([0.15, 0.25, 0.9])
    assert torch.allclose(out["rgba"][0, 16, 16, :3], red, atol=1e-3)
    assert torch.allclose(out["rgba"][1, 16, 16, :3], green, atol=1e-3)
    assert torch.allclose(top["rgba"][0, 16, 16, :3], blue, atol=1e-3)
    assert torch.allclose(out["rgba"][2, 16, 12, :3], red, atol=1e-3)
    assert torch.allclose(out["rgba"][2, 16, 20, :3], green, atol=1e-3)
    assert torch.allclose(out["rgba"][0, 12, 16, :3], red, atol=1e-3)  # image row 12 is above the centre


def test_front_and_back_differ_for_every_object():
    for obj in KNOWN_OBJECTS.values():
        out = render_known_object(obj, _cameras([0.0, 180.0]), supersample=1)
        images = composite(out["rgba"], (1.0, 1.0, 1.0))
        assert (images[0] - images[1]).abs().mean() > 0.05, obj.name


def test_antialiased_edges_have_partial_coverage():
    out = render_known_object(get_known_object("torus"), _cameras([20.0]), supersample=3)
    alpha = out["rgba"][..., 3]
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 10
    on_white = composite(out["rgba"], (1.0, 1.0, 1.0))
    assert torch.allclose(on_white[alpha == 0], torch.ones(3))


def test_reference_and_posed_folders(tmp_path):
    obj = get_known_object("two-lobed-blob")
    view = ReferenceView(azimuth=0.0, elevation=10.0, radius=2.2, fov=35.0, size=48)
    folder = write_reference_folder(obj, tmp_path / "blob", view)
    import imageio.v3 as iio

    rgba = iio.imread(folder / "rgba.png")
    depth = np.load(folder / "depth.npy")
    meta = json.loads((folder / "meta.json").read_text())
    assert rgba.shape == (48, 48, 4) and depth.shape == (48, 48)
    assert meta["known_object"] == "two-lobed-blob" and meta["elevation"] == 10.0 and meta["fov"] == 35.0
    assert (depth[rgba[..., 3] == 255] > 1.4).all() and (depth[rgba[..., 3] == 0] == 0).all()
    assert (folder / "caption.txt").read_text().strip() == obj.caption

    posed = write_posed_views(obj, tmp_path / "posed", _cameras([90.0, 200.0], size=24), points=100)
    transforms = json.loads((posed / "transforms.json").read_text())
    assert len(transforms["frames"]) == 2 and transforms["frames"][1]["w"] == 24
    assert iio.imread(posed / transforms["frames"][0]["file_path"]).shape == (24, 24, 4)
    assert np.load(posed / "points.npy").shape == (100, 3)
