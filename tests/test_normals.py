"""Normals of the shaded phase without a double backward: finite differences of the density (the route a
tiny-cuda-nn field takes) agree with the carried-forward ones, reach the field's parameters with first-order
autograd alone, and train."""

import math

import pytest
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from single_image_nerf.errors import UserInputError
from single_image_nerf.models.coarse_field import CoarseField

from tiny_training import tiny_config, write_ball_image

AABB = torch.tensor([[-1.0, -1.5, -1.0], [1.0, 1.5, 2.0]])  # not a cube: the step and the scale enter per axis


class _FirstOrderOnly(torch.autograd.Function):
    """Runs a module and gives its input and parameter gradients, but cannot be differentiated twice: a
    tiny-cuda-nn module as autograd sees it (tiny-cuda-nn issues #176 and #446)."""

    @staticmethod
    def forward(ctx, module: nn.Module, inputs: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            detached = inputs.detach().requires_grad_(inputs.requires_grad)
            outputs = module(detached)
        ctx.graph = (detached, outputs, parameters)
        return outputs.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_outputs: torch.Tensor):
        detached, outputs, parameters = ctx.graph
        wanted = ([detached] if detached.requires_grad else []) + list(parameters)
        grads = list(torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True))
        grad_inputs = grads.pop(0) if detached.requires_grad else None
        return (None, grad_inputs, *grads)


class FirstOrderOnly(nn.Module):
    """A module wrapped in `_FirstOrderOnly` (same parameters, same outputs, no double backward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return _FirstOrderOnly.apply(self.inner, inputs, *self.inner.parameters())


def smooth_field(**options) -> CoarseField:
    """A torch field without the density blob whose two grid levels (8 and 16, both indexed densely) hold a smooth
    function of the vertex positions: its normals are the grid's and the MLP's, and finite differences of a few
    thousandths of the box resolve them."""
    torch.manual_seed(0)
    field = CoarseField(AABB, num_levels=2, min_res=8, max_res=16, log2_hashmap_size=14, hidden_dim=32,
                        blob_strength=0.0, implementation="torch", **options)
    encoding = field.encoding
    resolutions = [int(s) for s in encoding.scalings.tolist()]
    assert encoding._index_layout(torch.device("cpu"))[0] == len(resolutions) == 2  # pylint: disable=protected-access
    with torch.no_grad():
        for level, resolution in enumerate(resolutions):
            side = resolution + 2  # the dense layout: x + y side + z side^2 from the level's offset
            vertices = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
            rows = level * encoding.hash_table_size + vertices @ torch.tensor([1, side, side * side])
            frequencies = 3.0 * torch.randn(3, encoding.features_per_level)
            phases = 2.0 * math.pi * torch.rand(encoding.features_per_level)
            encoding.hash_table[rows] = torch.sin(vertices.float() / resolution @ frequencies + phases)
    return field


def points_in_box(count: int) -> torch.Tensor:
    return (torch.rand(count, 3) * 0.9 + 0.05) * (AABB[1] - AABB[0]) + AABB[0]


def test_finite_difference_normals_agree_with_the_carried_forward_ones():
    field = smooth_field()
    positions = points_in_box(4000)
    density, albedo, analytic = field.raw_with_normals(positions)
    fd_density, fd_albedo, finite = field.raw_with_finite_difference_normals(positions)
    assert torch.allclose(fd_density, density, rtol=1e-5)
    assert torch.allclose(fd_albedo, albedo, atol=1e-6)
    cosine = (analytic * finite).sum(-1)
    # Cosine above 0.99 but near the MLP's kinks and the cells' faces (where the field is only piecewise smooth)
    # and where the gradient vanishes; a step not scaled per axis of this box leaves about 20% above 0.99.
    assert cosine.mean() > 0.99 and (cosine > 0.99).float().mean() > 0.9, (cosine > 0.99).float().mean()
    # Outside the box both are zero; the batch shape (rays, samples) is kept.
    outside = torch.tensor([[[3.0, 0.0, 0.0], [0.0, -2.0, 0.0]]])
    _, _, normals = field.raw_with_finite_difference_normals(outside)
    assert normals.shape == (1, 2, 3) and torch.all(normals == 0)


def test_the_step_is_a_fraction_of_the_box_side():
    field = smooth_field(finite_difference_eps=0.25)  # far too coarse a step: the normals must change
    positions = points_in_box(2000)
    coarse = field.raw_with_finite_difference_normals(positions)[2]
    field.finite_difference_eps = 0.005
    fine = field.raw_with_finite_difference_normals(positions)[2]
    assert (coarse * fine).sum(-1).mean() < 0.98


def test_auto_takes_finite_differences_where_there_is_no_carried_forward_gradient():
    field = smooth_field()
    assert field.normals_route() == "analytic"
    assert smooth_field(normals="finite-difference").normals_route() == "finite-difference"
    positions = points_in_box(500)
    reference = field.raw_with_finite_difference_normals(positions)
    field.encoding = FirstOrderOnly(field.encoding)
    field.mlp = FirstOrderOnly(field.mlp)
    assert not field.has_analytic_gradient() and field.normals_route() == "finite-difference"
    for got, expected in zip(field.raw_with_finite_difference_normals(positions), reference):
        assert torch.allclose(got, expected)
    field.normals = "analytic"
    with pytest.raises(UserInputError, match="tiny-cuda-nn has no double backward"):
        field.normals_route()


def test_finite_difference_normals_train_with_first_order_autograd_only():
    field = smooth_field()
    field.encoding = FirstOrderOnly(field.encoding)
    field.mlp = FirstOrderOnly(field.mlp)
    positions = points_in_box(800)
    light = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8]), dim=0)

    # Autograd's normals need the double backward that such modules lack: the wrapper must refuse it.
    autograd_positions = positions.clone().requires_grad_(True)
    density = field.raw(autograd_positions)[0]
    gradient = torch.autograd.grad(density.sum(), autograd_positions, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="twice"):
        gradient.square().sum().backward()
    field.zero_grad()

    density, albedo, normals = field.raw_with_finite_difference_normals(positions)
    (normals @ light).clamp_min(0.0).square().sum().backward()  # a shading loss on the normals alone
    grid, = field.encoding.inner.parameters()
    assert grid.grad is not None and torch.isfinite(grid.grad).all() and grid.grad.abs().sum() > 0
    for parameter in field.mlp.inner.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
    first_layer = next(field.mlp.inner.parameters())
    assert first_layer.grad.abs().sum() > 0


def test_shaded_training_steps_with_finite_difference_normals_give_finite_losses(tmp_path):
    config = tiny_config(write_ball_image(tmp_path / "disc.png", size=32), tmp_path / "outputs", steps=4,
                         image_size=32, novel_resolution=16, rays=256)
    model = config.pipeline.model
    model.shading_start = 0.0
    model.textureless_ratio = 0.5
    model.albedo_ratio = 0.0  # every novel view is shaded
    model.normals = "finite-difference"
    config.steps_per_save = 1_000_000
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    field = trainer.pipeline.model.field
    assert field.normals_route() == "finite-difference"
    field.encoding = FirstOrderOnly(field.encoding)  # the optimiser holds the same parameters
    field.mlp = FirstOrderOnly(field.mlp)
    before = [parameter.detach().clone() for parameter in field.parameters()]
    for step in range(4):
        trainer.pipeline.train()
        loss, loss_dict, _ = trainer.train_iteration(step)
        assert math.isfinite(float(loss.detach())), loss_dict
        assert all(math.isfinite(float(value.detach())) for value in loss_dict.values()), loss_dict
    assert any("orientation" in name for name in loss_dict), list(loss_dict)  # the normals entered the loss
    for old, new in zip(before, field.parameters()):
        assert torch.isfinite(new).all()
    assert any(not torch.equal(old, new) for old, new in zip(before, field.parameters()))
