"""OracleGuidance: the loss is the weighted MSE to the known object's renders at the same cameras."""

from dataclasses import dataclass, field

import pytest
import torch
import tyro

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.guidance.base import GuidanceConfig, GuidanceContext
from single_image_nerf.guidance.oracle import OracleGuidance, OracleGuidanceConfig, oracle_targets
from single_image_nerf.guidance.registry import AnyGuidanceConfig
from single_image_nerf.known_objects import ReferenceView, get_known_object, write_reference_folder


def _cameras(size=24):
    return orbit_cameras(torch.tensor([30.0, 200.0]), torch.tensor([10.0, 40.0]), torch.tensor([2.5, 2.3]),
                         torch.tensor([40.0, 38.0]), size, size)


def test_loss_is_zero_at_the_truth_and_weighted_mse_elsewhere():
    context = GuidanceContext(device=torch.device("cpu"))
    guidance = OracleGuidanceConfig(weight=3.0, known_object="torus").setup(context=context)
    assert isinstance(guidance, OracleGuidance)
    cameras = _cameras()
    truth = oracle_targets(get_known_object("torus"), cameras, 24, 24, (1.0, 1.0, 1.0), 2)
    assert truth.shape == (2, 3, 24, 24) and torch.allclose(truth[:, :, 0, 0], torch.ones(2, 3))
    assert guidance.loss(truth, cameras, step=0)["oracle_loss"].item() == pytest.approx(0.0, abs=1e-10)
    images = (truth + 0.1).requires_grad_(True)
    loss = guidance.loss(images, cameras, step=1)["oracle_loss"]
    assert loss.item() == pytest.approx(3.0 * 0.01, rel=1e-4)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert guidance.status(1)["oracle_psnr"] == pytest.approx(20.0, abs=1e-3)


def test_background_colour_and_render_size():
    cameras = _cameras(size=32)
    black = oracle_targets(get_known_object("box"), cameras, 16, 16, (0.0, 0.0, 0.0), 2)
    assert black.shape == (2, 3, 16, 16) and black[:, :, 0, 0].abs().max() == 0


def test_object_named_by_the_data_folder(tmp_path):
    folder = write_reference_folder(get_known_object("two-lobed-blob"), tmp_path / "blob", ReferenceView(size=16))
    guidance = OracleGuidanceConfig().setup(context=GuidanceContext(device=torch.device("cpu"), data_dir=folder))
    assert guidance.known_object.name == "two-lobed-blob"
    with pytest.raises(ValueError, match="known"):
        OracleGuidanceConfig().setup(context=GuidanceContext(device=torch.device("cpu")))


def test_selectable_from_the_command_line():
    @dataclass
    class Holder:
        guidance: AnyGuidanceConfig = field(default_factory=GuidanceConfig)

    parsed = tyro.cli(Holder, args=["guidance:oracle", "--guidance.known-object", "box", "--guidance.weight", "2"])
    assert isinstance(parsed.guidance, OracleGuidanceConfig)
    assert parsed.guidance.known_object == "box" and parsed.guidance.weight == 2.0


def test_none_is_selectable_when_the_default_is_another_guidance():
    from single_image_nerf.guidance.base import NoGuidanceConfig
    from single_image_nerf.pipeline import SingleImagePipelineConfig

    @dataclass
    class Holder:
        guidance: AnyGuidanceConfig = field(default_factory=SingleImagePipelineConfig().guidance.__class__)

    parsed = tyro.cli(Holder, args=["guidance:none"])
    assert type(parsed.guidance) is NoGuidanceConfig
    assert type(tyro.cli(Holder, args=[]).guidance) is type(SingleImagePipelineConfig().guidance)
