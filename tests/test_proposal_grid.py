"""The proposal density grid: trilinear in the right axes over the scene box, zero outside, trainable."""

import math

import torch

from single_image_nerf.models.proposal_grid import DenseDensityGrid

AABB = torch.tensor([[-1.0, -2.0, 0.0], [1.0, 2.0, 4.0]])


def test_vertices_and_midpoints_interpolate_log_density_along_the_right_axes():
    grid = DenseDensityGrid(AABB, resolution=3)
    with torch.no_grad():  # indexed [z, y, x]: log-density = x index + 10 y index + 100 z index
        z, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), torch.arange(3.0), indexing="ij")
        grid.log_density[0, 0] = (x + 10 * y + 100 * z) / 100.0
    vertex = torch.tensor([[1.0, -2.0, 2.0]])  # x index 2, y index 0, z index 1
    assert math.isclose(float(grid.density_fn(vertex)), math.exp(1.02), rel_tol=1e-5)
    midpoint = torch.tensor([[0.5, 1.0, 3.0]])  # x index 1.5, y index 1.5, z index 1.5
    assert math.isclose(float(grid.density_fn(midpoint)), math.exp(1.665), rel_tol=1e-5)


def test_zero_outside_the_box_and_shape_of_a_ray_batch():
    grid = DenseDensityGrid(AABB, resolution=8)
    positions = torch.tensor([[[0.0, 0.0, 2.0], [1.5, 0.0, 2.0]], [[0.0, -2.5, 2.0], [0.0, 0.0, -0.1]]])
    density = grid.density_fn(positions)
    assert density.shape == (2, 2, 1)
    assert float(density[0, 0]) == 1.0 and torch.all(density.flatten()[1:] == 0.0)


def test_gradient_reaches_only_the_neighbouring_vertices():
    grid = DenseDensityGrid(AABB, resolution=5)
    grid.density_fn(torch.tensor([[0.1, 0.3, 2.2]])).sum().backward()
    touched = grid.log_density.grad[0, 0] != 0
    assert int(touched.sum()) == 8
    assert torch.isclose(grid.log_density.grad.sum(), torch.tensor(1.0))  # d exp(v)/dv at v = 0, split 8 ways
