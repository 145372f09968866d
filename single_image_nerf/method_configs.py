"""The methods single-image-nerf registers with nerfstudio.

The dataparser's registration lives beside the dataparser (single_image_dataparser.py): nerfstudio loads dataparser
entry points while its datamanager module is half imported, so that entry point must not import the trainer."""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from single_image_nerf.pipeline import SingleImagePipelineConfig
from single_image_nerf.schedulers import FloatExponentialDecaySchedulerConfig
from single_image_nerf.trainer import SingleImageTrainerConfig


def _field_optimizer(lr: float, max_steps: int) -> dict:
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=lr * 0.1, max_steps=max_steps),
    }


def coarse_trainer_config(max_steps: int = 5000) -> SingleImageTrainerConfig:
    """The coarse stage: hash-grid field, reference losses and the guidance on novel views."""
    return SingleImageTrainerConfig(
        method_name="single-image-nerf",
        steps_per_eval_batch=0,
        steps_per_eval_image=250,
        steps_per_eval_all_images=0,
        steps_per_save=250,
        save_only_latest_checkpoint=True,
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=SingleImagePipelineConfig(),
        optimizers={
            "proposal_networks": _field_optimizer(1e-2, max_steps),
            "fields": _field_optimizer(1e-2, max_steps),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="viewer",
    )


coarse_method = MethodSpecification(
    config=coarse_trainer_config(),
    description="Single-image 360° reconstruction, coarse stage: hash-grid NeRF + score distillation.",
)
