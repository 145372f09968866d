"""The contextual loss on VGG16 features (random weights: no download): it ranks matches right and its gradients are
finite."""

import pytest
import torch

from single_image_nerf.errors import UserInputError
from single_image_nerf.refine.contextual_loss import ContextualLoss, contextual_loss, contextual_similarity


def textured_image(size: int = 48, seed: int = 0) -> torch.Tensor:
    """A (3, size, size) image with stripes and blobs in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
    stripes = 0.5 + 0.5 * torch.sin(cols / 2.0)
    blobs = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=generator), 5, 1, 2)[0]
    return torch.stack([stripes, 0.3 + 0.4 * rows / size, stripes.T]) * 0.6 + 0.4 * blobs


@pytest.fixture(scope="module")
def loss_fn():
    torch.manual_seed(0)  # the random VGG weights
    return ContextualLoss(weights="random", layers=("relu2_2", "relu3_1"), image_size=48)


def test_similarity_of_a_set_with_itself_beats_a_different_set():
    generator = torch.Generator().manual_seed(1)
    y = torch.randn(64, 16, generator=generator)
    other = torch.randn(64, 16, generator=generator)
    same = contextual_similarity(y.clone(), y)
    assert 0.0 < float(contextual_similarity(other, y)) < float(same) <= 1.0 + 1e-6
    assert float(contextual_loss(y[torch.randperm(64, generator=generator)], y)) == pytest.approx(
        float(contextual_loss(y, y)), abs=1e-5)  # positions do not matter


def test_identical_images_score_lower_than_shuffled_or_different_ones(loss_fn):
    reference = textured_image(seed=0)
    generator = torch.Generator().manual_seed(2)
    flat = reference.flatten(1)
    shuffled = flat[:, torch.randperm(flat.shape[1], generator=generator)].reshape_as(reference)
    different = textured_image(seed=5).flip(-1).transpose(-1, -2) * 0.5
    renders = torch.stack([reference, shuffled, different])
    losses = [float(loss_fn(renders[i:i + 1], reference)) for i in range(3)]
    assert losses[0] < losses[1] and losses[0] < losses[2], losses
    # A translated copy keeps the texture: closer than the shuffled pixels.
    moved = torch.roll(reference, shifts=(6, 9), dims=(1, 2))
    assert float(loss_fn(moved[None], reference)) < losses[1]


def test_gradients_reach_the_render_and_are_finite_and_masks_are_honoured(loss_fn):
    reference = textured_image(seed=0)
    render = textured_image(seed=3)[None].clone().requires_grad_(True)
    mask = torch.zeros(1, 48, 48)
    mask[:, 8:40, 8:40] = 1.0
    loss = loss_fn(render, reference, render_masks=mask, reference_mask=mask[0])
    loss.backward()
    assert torch.isfinite(loss.detach()) and float(loss.detach()) > 0.0
    assert torch.isfinite(render.grad).all() and float(render.grad.abs().sum()) > 0.0
    assert loss_fn.vgg.training is False and not any(p.requires_grad for p in loss_fn.vgg.parameters())
    empty = loss_fn(render, reference, render_masks=torch.zeros(1, 48, 48))
    assert float(empty) == 0.0  # nothing to match inside an empty mask


def test_bad_layers_and_weights_fail_with_one_line(tmp_path):
    with pytest.raises(UserInputError, match="unknown VGG16 layers"):
        ContextualLoss(weights="random", layers=("relu9_9",))
    missing = tmp_path / "missing.pth"
    with pytest.raises(UserInputError, match="not found"):
        ContextualLoss(weights=missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(UserInputError) as error:
        ContextualLoss(weights=wrong)
    assert "\n" not in str(error.value) and "VGG16" in str(error.value)
