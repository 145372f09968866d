"""The camera convention and the novel-view curriculum, tested as pure functions."""

import math

import pytest
import torch

from single_image_nerf.data.camera_sampling import (
    curriculum_ranges,
    focal_from_fov,
    fov_from_focal,
    orbit_cameras,
    orbit_pose,
    pose_angles,
    sample_views,
    wrap_degrees,
)


def test_reference_pose_at_azimuth_zero_looks_down_minus_x_with_z_up():
    pose = orbit_pose(0.0, 0.0, 2.5)
    right, up, backward, position = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
    assert torch.allclose(position, torch.tensor([2.5, 0.0, 0.0]))
    assert torch.allclose(backward, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # camera looks down its -Z: to -X
    assert torch.allclose(up, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(right, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("azimuth,elevation", [(0, 0), (90, 30), (-135, -20), (180, 60), (45, 88)])
def test_pose_is_a_rotation_looking_at_the_origin(azimuth, elevation):
    pose = orbit_pose(float(azimuth), float(elevation), 3.0)
    rotation = pose[:, :3]
    assert torch.allclose(rotation.T @ rotation, torch.eye(3), atol=1e-5)
    assert torch.det(rotation) == pytest.approx(1.0, abs=1e-5)
    forward = -rotation[:, 2]
    assert torch.allclose(forward, -pose[:, 3] / pose[:, 3].norm(), atol=1e-5)
    assert rotation[2, 1] >= 0  # image up never points below the horizon
    angles = pose_angles(pose)
    assert float(angles[0]) == pytest.approx(float(wrap_degrees(torch.tensor(float(azimuth)))), abs=1e-3)
    assert float(angles[1]) == pytest.approx(elevation, abs=1e-3)
    assert float(angles[2]) == pytest.approx(3.0, abs=1e-5)


def test_azimuth_runs_from_x_toward_y():
    assert torch.allclose(orbit_pose(90.0, 0.0, 1.0)[:, 3], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert orbit_pose(0.0, 30.0, 1.0)[2, 3] == pytest.approx(0.5, abs=1e-6)


def test_fov_and_focal_are_inverse():
    focal = focal_from_fov(60.0, 100)
    assert float(focal) == pytest.approx(50.0 / math.tan(math.radians(30.0)), rel=1e-5)
    assert float(fov_from_focal(focal, 100)) == pytest.approx(60.0, abs=1e-4)


def test_origin_projects_to_the_image_centre():
    cameras = orbit_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.0]), torch.tensor([40.0]), 64, 48)
    rays = cameras.generate_rays(camera_indices=0, keep_shape=True)
    # The two central rays pass the origin at distance ~0.
    centre = rays.origins[23:25, 31:33].reshape(-1, 3), rays.directions[23:25, 31:33].reshape(-1, 3)
    closest = centre[0] - (centre[0] * centre[1]).sum(-1, keepdim=True) * centre[1]
    assert float(closest.norm(dim=-1).max()) < 2.0 * math.tan(math.radians(20.0)) * 2 / 48
    assert float(cameras.metadata["reference_azimuth"][0]) == 0.0


def test_curriculum_widens_from_window_to_full_circle():
    kwargs = dict(initial_azimuth_half_width=45.0, widen_steps=100, elevation=(-10.0, 45.0), radius=(2.0, 3.0),
                  fov=(30.0, 40.0))
    assert curriculum_ranges(0, **kwargs).azimuth_half_width == 45.0
    assert curriculum_ranges(50, **kwargs).azimuth_half_width == pytest.approx(112.5)
    assert curriculum_ranges(100, **kwargs).azimuth_half_width == 180.0
    assert curriculum_ranges(10_000, **kwargs).azimuth_half_width == 180.0
    assert curriculum_ranges(20, widen_start=50, **kwargs).azimuth_half_width == 45.0


def test_samples_stay_inside_their_ranges_and_are_seeded():
    ranges = curriculum_ranges(0, 45.0, 100, (-10.0, 45.0), (2.0, 3.0), (30.0, 40.0))
    first = sample_views(ranges, 5000, 180.0, torch.Generator().manual_seed(3))
    again = sample_views(ranges, 5000, 180.0, torch.Generator().manual_seed(3))
    other = sample_views(ranges, 5000, 180.0, torch.Generator().manual_seed(4))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    azimuth, elevation, radius, fov = first
    offset = wrap_degrees(azimuth - 180.0)
    assert float(offset.abs().max()) <= 45.0 + 1e-4
    assert float(elevation.min()) >= -10.0 - 1e-4 and float(elevation.max()) <= 45.0 + 1e-4
    assert float(radius.min()) >= 2.0 and float(radius.max()) <= 3.0
    assert float(fov.min()) >= 30.0 and float(fov.max()) <= 40.0


def test_full_circle_directions_are_uniform_over_the_sphere():
    ranges = curriculum_ranges(1, 45.0, 0, (-90.0, 90.0), (2.0, 2.0), (40.0, 40.0))
    azimuth, elevation, _, _ = sample_views(ranges, 40_000, 0.0, torch.Generator().manual_seed(0))
    directions = orbit_pose(azimuth, elevation, 1.0)[..., 3]
    # Uniform on the sphere: mean near zero, each coordinate's second moment 1/3, z uniform in [-1, 1].
    assert directions.mean(0).abs().max() < 0.02
    assert torch.allclose((directions**2).mean(0), torch.full((3,), 1.0 / 3.0), atol=0.02)
    histogram = torch.histc(directions[:, 2], bins=10, min=-1.0, max=1.0) / directions.shape[0]
    assert histogram.min() > 0.08 and histogram.max() < 0.12
    assert float(azimuth.min()) < -170.0 and float(azimuth.max()) > 170.0
