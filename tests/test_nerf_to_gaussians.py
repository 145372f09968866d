"""Seeds from an analytic field: on the sphere, with its colour, with neighbour-distance scales."""

from __future__ import annotations

import math

import pytest
import torch

from analytic_fields import (LEVEL, SPHERE_CENTRE, SPHERE_COLOUR, SPHERE_RADIUS, hemisphere_albedo, sphere_albedo,
                             sphere_density)
from single_image_nerf.errors import UserInputError
from single_image_nerf.refine.nerf_to_gaussians import knn_scales, nerf_to_gaussians

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def test_seeds_lie_on_the_sphere_with_its_colour():
    seeds = nerf_to_gaussians(sphere_density, sphere_albedo, AABB, LEVEL, num_points=4000, resolution=64)
    assert len(seeds) == 4000
    distance = (seeds.means - torch.tensor(SPHERE_CENTRE)).norm(dim=-1)
    voxel = 2.0 / 63
    assert (distance - SPHERE_RADIUS).abs().max() < 0.25 * voxel
    torch.testing.assert_close(seeds.colors, torch.tensor(SPHERE_COLOUR).expand(4000, 3), atol=1e-6, rtol=0)
    # Spread over the whole sphere: each octant around the centre holds about an eighth of the seeds.
    octant = ((seeds.means - torch.tensor(SPHERE_CENTRE)) > 0).long() @ torch.tensor([1, 2, 4])
    counts = torch.bincount(octant, minlength=8).float()
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500
    # Scales: the mean 3-neighbour distance of N uniform points on a sphere is about sqrt(area / N) / 2 or so.
    spacing = math.sqrt(4 * math.pi * SPHERE_RADIUS**2 / 4000)
    assert seeds.scales.shape == (4000, 3) and torch.all(seeds.scales[:, 0] == seeds.scales[:, 2])
    assert 0.2 * spacing < seeds.scales.median() < 1.5 * spacing
    assert torch.all(seeds.opacities == 0.5)


def test_colours_follow_positions_and_draws_are_reproducible():
    first = nerf_to_gaussians(sphere_density, hemisphere_albedo, AABB, LEVEL, num_points=500, resolution=48, seed=3)
    again = nerf_to_gaussians(sphere_density, hemisphere_albedo, AABB, LEVEL, num_points=500, resolution=48, seed=3)
    torch.testing.assert_close(first.means, again.means)
    up = first.means[:, 2] > 0
    assert torch.all(first.colors[up] == torch.tensor([1.0, 0.0, 0.0]))
    assert torch.all(first.colors[~up] == torch.tensor([0.0, 0.0, 1.0]))


def test_level_outside_the_density_range_is_a_clear_error():
    with pytest.raises(UserInputError, match="never crosses level 500"):
        nerf_to_gaussians(sphere_density, sphere_albedo, AABB, 500.0, resolution=16)


def test_knn_scales_on_a_lattice():
    axis = torch.arange(5, dtype=torch.float32) * 0.1
    lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    scales = knn_scales(lattice, k=3)
    interior = ((lattice > 0.05) & (lattice < 0.35)).all(-1)
    torch.testing.assert_close(scales[interior], torch.full((int(interior.sum()), 3), 0.1))
