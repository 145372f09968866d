"""A short coarse-stage training through nerfstudio's Trainer on the CPU with the stable-diffusion guidance loading
the tiny offline pipeline: finite losses, a gradient into the field from the novel views alone, checkpoints free
of guidance weights, and inference-mode loading that never touches diffusers or transformers."""

from __future__ import annotations

import sys

import pytest
import torch

from nerfstudio.utils.eval_utils import eval_setup

from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from hub_client import hub_offline
from tiny_diffusion import tiny_stable_diffusion_folder
from tiny_training import tiny_config, train, write_ball_image

STEPS = 3
GUIDANCE_WEIGHT_NAMES = ("unet", "vae", "text_encoder", "_guidance", "guidance.")
"""Key fragments that would betray Stable Diffusion weights in a checkpoint."""
REFERENCE_AND_REGULARISER_MULTS = (
    "rgb_loss_mult", "mask_loss_mult", "depth_loss_mult", "opacity_loss_mult", "orientation_loss_mult",
    "normal_smoothness_loss_mult", "interlevel_loss_mult",
)
"""Every loss multiplier of the coarse model: set to 0, only the guidance's loss is left."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-train")
    torch.manual_seed(0)
    image = write_ball_image(root / "disc.png", size=32)
    config = tiny_config(image, root / "outputs", steps=STEPS, image_size=32, novel_resolution=16, rays=128)
    config.pipeline.guidance = StableDiffusionGuidanceConfig(
        model_path=str(tiny_stable_diffusion_folder()), prompt="a red and green ball"
    )
    config.steps_per_save = STEPS
    with pytest.MonkeyPatch.context() as patch:
        hub_offline(patch)
        trainer = train(config)
    return trainer, config


def _field_grads(trainer, step: int, guidance_weight: float):
    """One real train_iteration with only the guidance's loss left; the field's parameter gradients after it."""
    model = trainer.pipeline.model
    saved = {name: getattr(model.config, name) for name in REFERENCE_AND_REGULARISER_MULTS}
    guidance = trainer.pipeline.guidance
    saved_weight = guidance.config.weight
    try:
        for name in REFERENCE_AND_REGULARISER_MULTS:
            setattr(model.config, name, 0.0)
        guidance.config.weight = guidance_weight
        loss, loss_dict, _ = trainer.train_iteration(step)
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)
        guidance.config.weight = saved_weight
    grads = [p.grad for p in model.field.parameters() if p.grad is not None]
    return loss, loss_dict, grads


def test_training_with_the_tiny_pipeline_is_finite_and_the_novel_views_move_the_field(trained):
    trainer, _ = trained
    guidance = trainer.pipeline.guidance
    assert guidance is not None and guidance.encoder == "latent"  # auto on the CPU
    assert guidance.skipped_steps == 0 and trainer.pipeline.skipped_steps == 0
    for parameter in trainer.pipeline.model.parameters():
        assert torch.isfinite(parameter).all()

    loss, loss_dict, grads = _field_grads(trainer, STEPS, guidance_weight=1.0)
    assert "guidance_sds_loss" in loss_dict and "rgb_loss" in loss_dict
    assert all(torch.isfinite(value) for value in loss_dict.values()) and torch.isfinite(loss)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0.0  # the guidance alone reaches the field
    assert guidance.status(STEPS)["sds_grad_norm"] > 0.0

    # The control: the same iteration without the guidance's weight leaves the field without a gradient.
    _, _, grads = _field_grads(trainer, STEPS + 1, guidance_weight=0.0)
    assert sum(float(g.abs().sum()) for g in grads) == 0.0


def test_checkpoint_holds_no_guidance_weights(trained):
    trainer, _ = trained
    checkpoints = sorted(trainer.checkpoint_dir.glob("step-*.ckpt"))
    assert checkpoints
    saved = torch.load(checkpoints[-1], map_location="cpu")
    keys = list(saved["pipeline"])
    assert any("field" in key for key in keys)
    leaked = [key for key in keys if any(name in key for name in GUIDANCE_WEIGHT_NAMES)]
    assert not leaked, leaked[:5]
    assert not any(name in key for key in saved.get("optimizers", {}) for name in ("unet", "vae", "text_encoder"))


def test_inference_loading_does_not_load_diffusers_or_transformers(trained, monkeypatch):
    trainer, config = trained
    # With the two libraries unimportable, any attempt to build the guidance raises ImportError ...
    for module in ("diffusers", "transformers"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError):
        config.pipeline.guidance.setup(context=trainer.pipeline.guidance_context())
    # ... and loading the run as ns-export and the viewer do (test_mode "inference") succeeds all the same.
    _, pipeline, checkpoint, step = eval_setup(config.get_base_dir() / "config.yml", test_mode="inference")
    assert pipeline.guidance is None and checkpoint.exists() and step == STEPS - 1
    assert not any(name in key for key in pipeline.state_dict() for name in GUIDANCE_WEIGHT_NAMES)
    outputs = pipeline.model.get_outputs_for_camera(pipeline.datamanager.train_dataparser_outputs.cameras[0:1])
    assert torch.isfinite(outputs["rgb"]).all()
