"""The vectorised hash encoding behaves like nerfstudio's HashEncoding: same output, continuity and gradients."""

import pytest
import torch

from nerfstudio.field_components.encodings import HashEncoding

from single_image_nerf.models.coarse_field import CoarseField, VectorisedHashEncoding

SETTINGS = dict(num_levels=8, min_res=16, max_res=256, log2_hashmap_size=12, features_per_level=2,
                implementation="torch")


def close(got, expected, relative=1e-4):
    """Equal up to float rounding, relative to the largest entry (gradients reach the thousands here)."""
    return bool((got - expected).abs().max() <= relative * expected.abs().max())


@pytest.fixture()
def pair():
    torch.manual_seed(0)
    reference = HashEncoding(**SETTINGS)
    fast = VectorisedHashEncoding(**SETTINGS)
    with torch.no_grad():
        reference.hash_table.uniform_(-1.0, 1.0)  # large values: any wrong corner or weight shows
        fast.hash_table.copy_(reference.hash_table)
    return reference, fast


def test_same_output_as_nerfstudio_on_random_and_grid_points(pair):
    reference, fast = pair
    points = torch.cat([torch.rand(5000, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 1.0]]),
                        torch.randint(0, 17, (200, 3)) / 16.0])  # corners and exact grid vertices too
    expected = reference(points)
    assert fast.get_out_dim() == reference.get_out_dim() == 16
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            got = fast(points)
        assert got.shape == expected.shape == (points.shape[0], 16)
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    batched = fast(points[:600].reshape(20, 30, 3))
    assert batched.shape == (20, 30, 16) and torch.allclose(batched.reshape(600, 16), expected[:600], atol=1e-5)


def test_interpolation_is_continuous_across_cell_faces(pair):
    _, fast = pair
    finest = float(fast.scalings[-1])
    face = (torch.arange(1, 40, dtype=torch.float32) / finest)[:, None].expand(-1, 3).clone()
    face[:, 1:] = torch.rand(39, 2)
    for eps in (1e-3, 1e-4):
        offset = torch.tensor([eps / finest, 0.0, 0.0])
        jump = (fast(face + offset) - fast(face - offset)).abs().max()
        assert jump < 20 * eps  # Lipschitz: the change shrinks with the step, no jump at the face


def test_gradients_match_nerfstudio_for_the_table_and_the_positions(pair):
    reference, fast = pair
    points = torch.rand(3000, 3)
    # On an exact grid vertex nerfstudio's ceil equals its floor and its position gradient drops to zero there;
    # the vectorised grid takes floor + 1 (as tiny-cuda-nn does) and keeps the one-sided derivative. Compare off
    # the vertices (a set of measure zero that float sampling still hits now and then).
    scaled = points[:, None, :] * reference.scalings[:, None]
    points = points[(scaled != torch.floor(scaled)).all(dim=-1).all(dim=-1)][:3000]
    weights = torch.randn(points.shape[0], 16)
    for encoding in (reference, fast):
        (encoding(points) * weights).sum().backward()
    assert torch.allclose(fast.hash_table.grad, reference.hash_table.grad, atol=1e-4)

    position_grads = []
    second = []
    for encoding in (reference, fast):
        encoding.hash_table.grad = None
        positions = points[:500].clone().requires_grad_(True)
        value = (encoding(positions) * weights[:500]).sum()
        grad = torch.autograd.grad(value, positions, create_graph=True)[0]
        position_grads.append(grad)
        grad.square().sum().backward()  # the double backward the normals of the shaded phase need
        second.append(encoding.hash_table.grad.clone())
    assert close(position_grads[1], position_grads[0]) and close(second[1], second[0])


def test_field_uses_the_fast_path():
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    field = CoarseField(aabb, num_levels=4, max_res=64, log2_hashmap_size=12, implementation="torch")
    assert isinstance(field.encoding, VectorisedHashEncoding) and field.has_analytic_gradient()


def autograd_normals(field, positions, create_graph):
    positions = positions.detach().requires_grad_(True)
    density, albedo = field.raw(positions)
    gradient = torch.autograd.grad(density.sum(), positions, create_graph=create_graph)[0]
    return density, albedo, -torch.nn.functional.normalize(gradient, dim=-1, eps=1e-6)


def test_forward_carried_normals_match_autograd_and_their_gradients_too():
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.5, -1.0], [1.0, 1.5, 2.0]])  # not a cube: the box's scale must enter per axis
    field = CoarseField(aabb, num_levels=6, max_res=128, log2_hashmap_size=14, hidden_dim=32, implementation="torch")
    with torch.no_grad():
        field.encoding.hash_table.uniform_(-1.0, 1.0)
    positions = torch.rand(4000, 3) * 1.1 * (aabb[1] - aabb[0]) + aabb[0] - 0.05 * (aabb[1] - aabb[0])
    # Where the density is next to zero autograd's gradient is shorter than normalize's eps and its normal shrinks
    # (same direction); keep the points where both are unit vectors, and those outside the box (zero normals).
    with torch.no_grad():
        density = field.raw(positions)[0][:, 0]
    positions = positions[(density > 1e-3) | (density == 0)]
    light = torch.nn.functional.normalize(torch.randn(3), dim=0)
    grads = []
    results = []
    for method in (lambda p: field.raw_with_normals(p), lambda p: autograd_normals(field, p, create_graph=True)):
        field.zero_grad()
        density, albedo, normals = method(positions)
        results.append((density, albedo, normals))
        # A shading-like loss on the normals and a colour loss: both must reach the table and the MLP alike.
        ((normals @ light).clamp_min(0).square().sum() + (density.clamp_max(50) * albedo).sum()).backward()
        grads.append([p.grad.clone() for p in field.parameters()])
    (d1, a1, n1), (d2, a2, n2) = results
    assert torch.allclose(d1, d2, rtol=1e-4, atol=1e-5) and torch.allclose(a1, a2, atol=1e-6)
    outside = ~(((positions >= aabb[0]) & (positions <= aabb[1])).all(dim=-1))
    assert outside.any() and torch.all(n1[outside] == 0) and torch.all(n2[outside] == 0)
    assert (n1 - n2).norm(dim=-1).max() < 1e-3
    for got, expected in zip(*grads):
        assert close(got, expected, relative=1e-3)


DENSE_SETTINGS = dict(num_levels=4, min_res=8, max_res=64, log2_hashmap_size=15, features_per_level=2,
                      implementation="torch")  # resolutions 8, 16, 32, 64: the first two fit 2^15 densely


def dense_reference(encoding, points, level):
    """Direct trilinear interpolation of one densely indexed level: vertex (x, y, z) is row x + y R + z R^2 (with
    R = resolution + 2) of the level's table."""
    resolution = int(encoding.scalings[level])
    side = resolution + 2
    scaled = points * resolution
    floor = torch.floor(scaled)
    frac = scaled - floor
    table = encoding.hash_table[level * encoding.hash_table_size:(level + 1) * encoding.hash_table_size]
    out = 0.0
    for cx in (0, 1):
        for cy in (0, 1):
            for cz in (0, 1):
                corner = floor.long() + torch.tensor([cx, cy, cz])
                weight = ((frac if cx else 1 - frac)[:, 0:1] * (frac if cy else 1 - frac)[:, 1:2]
                          * (frac if cz else 1 - frac)[:, 2:3])
                out = out + weight * table[corner[:, 0] + corner[:, 1] * side + corner[:, 2] * side * side]
    return out


def test_coarse_levels_are_indexed_densely_and_fine_levels_hashed_like_nerfstudio():
    torch.manual_seed(0)
    reference = HashEncoding(**DENSE_SETTINGS)
    fast = VectorisedHashEncoding(**DENSE_SETTINGS)
    with torch.no_grad():
        reference.hash_table.uniform_(-1.0, 1.0)
        fast.hash_table.copy_(reference.hash_table)
    dense = fast._index_layout(torch.device("cpu"))[0]
    assert dense == 2
    points = torch.cat([torch.rand(4000, 3), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 1.0]]),
                        torch.randint(0, 9, (200, 3)) / 8.0])
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled):
            got = fast(points).view(-1, 4, 2)
        for level in range(dense):
            assert torch.allclose(got[:, level], dense_reference(fast, points, level), atol=1e-5)
        assert torch.allclose(got[:, dense:], reference(points).view(-1, 4, 2)[:, dense:], atol=1e-5)

    # Every vertex of a dense level has its own row inside the level's part of the table: no collisions.
    for level in range(dense):
        side = int(fast.scalings[level]) + 2
        vertices = torch.stack(torch.meshgrid(*[torch.arange(side - 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
        index, _ = fast.corner_indices((vertices.float() + 0.5) / float(fast.scalings[level]))
        rows = index[:, level].reshape(-1)
        assert rows.unique().numel() == side ** 3 and rows.min() >= level * fast.hash_table_size
        assert rows.max() < (level + 1) * fast.hash_table_size


def test_dense_level_gradients_match_the_direct_reference():
    torch.manual_seed(1)
    fast = VectorisedHashEncoding(**DENSE_SETTINGS)
    with torch.no_grad():
        fast.hash_table.uniform_(-1.0, 1.0)
    points = torch.rand(2000, 3)
    weights = torch.randn(points.shape[0], 2)
    expected_value = sum((dense_reference(fast, points, level) * weights).sum() for level in range(2))
    expected_table = torch.autograd.grad(expected_value, fast.hash_table)[0]
    select = torch.zeros(4, 2)
    select[:2] = 1.0
    for positions_need_grad in (False, True):  # the fused lookup, and the lerps the normals go through
        fast.hash_table.grad = None
        positions = points.clone().requires_grad_(positions_need_grad)
        value = (fast(positions).view(-1, 4, 2) * select * weights[:, None]).sum()
        value.backward()
        assert close(fast.hash_table.grad, expected_table)

    positions = points[:500].clone().requires_grad_(True)
    reference_positions = points[:500].clone().requires_grad_(True)
    value = (fast(positions).view(-1, 4, 2) * select * weights[:500, None]).sum()
    expected = sum((dense_reference(fast, reference_positions, level) * weights[:500]).sum() for level in range(2))
    got_grad = torch.autograd.grad(value, positions, create_graph=True)[0]
    expected_grad = torch.autograd.grad(expected, reference_positions, create_graph=True)[0]
    assert close(got_grad, expected_grad)
    second = torch.autograd.grad(got_grad.square().sum(), fast.hash_table)[0]
    expected_second = torch.autograd.grad(expected_grad.square().sum(), fast.hash_table)[0]
    assert close(second, expected_second)
