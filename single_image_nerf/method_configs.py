"""The methods single-image-nerf registers with nerfstudio.

The dataparser's registration lives beside the dataparser (single_image_dataparser.py): nerfstudio loads dataparser
entry points while its datamanager module is half imported, so that entry point must not import the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from single_image_nerf.pipeline import SingleImagePipelineConfig
from single_image_nerf.refine.pipeline import RefinePipelineConfig
from single_image_nerf.schedulers import FloatExponentialDecaySchedulerConfig
from single_image_nerf.trainer import SingleImageTrainerConfig


def _field_optimizer(lr: float) -> dict:
    """Adam with a tenfold exponential decay over the whole run."""
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=lr * 0.1),
    }


def _stage_trainer_config(method_name: str, pipeline, optimizers: dict,
                          max_steps: Optional[int]) -> SingleImageTrainerConfig:
    """What both stages share: a save and a preview image every 250 steps, only the latest checkpoint kept, fp32,
    and the viewer bound to this machine only."""
    return SingleImageTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=0,
        steps_per_eval_image=250,
        steps_per_eval_all_images=0,
        steps_per_save=250,
        save_only_latest_checkpoint=True,
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14, websocket_host="127.0.0.1"),
        vis="viewer",
    )


def headless(config, device: str, output_dir: Path):
    """`config` (any nerfstudio TrainerConfig) set for a scripted run: on `device`, with tensorboard events and
    checkpoints under `output_dir`, no viewer, no per-step console table and no profiler."""
    config.machine.device_type = device
    config.vis = "tensorboard"
    config.output_dir = output_dir
    config.logging.profiler = "none"
    config.logging.local_writer.enable = False
    return config


def coarse_trainer_config(max_steps: Optional[int] = None) -> SingleImageTrainerConfig:
    """The coarse stage: hash-grid field, reference losses and the guidance on novel views. Every schedule is a
    fraction of `max_steps` (--max-num-iterations; None: the prior's recipe for the device)."""
    optimizers = {
        "proposal_networks": _field_optimizer(1e-2),
        "fields": _field_optimizer(1e-2),
    }
    return _stage_trainer_config("single-image-nerf", SingleImagePipelineConfig(), optimizers, max_steps)


coarse_method = MethodSpecification(
    config=coarse_trainer_config(),
    description="Single-image 360° reconstruction, coarse stage: hash-grid NeRF + score distillation.",
)


def _gaussian_optimizers() -> dict:
    """splatfacto's learning rates; the means decay a hundredfold over the run."""
    constant = {"features_dc": 0.0025, "features_rest": 0.0025 / 20, "opacities": 0.05, "scales": 0.005,
                "quats": 0.001}
    optimizers = {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
            "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=1.6e-6),
        },
    }
    for name, lr in constant.items():
        optimizers[name] = {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}
    return optimizers


def refine_trainer_config(max_steps: Optional[int] = None) -> SingleImageTrainerConfig:
    """The refine stage: Gaussians seeded from a coarse run, the same reference losses and the coarse run's prior
    (`max_steps` None: the prior's refine recipe for the device)."""
    return _stage_trainer_config("single-image-refine", RefinePipelineConfig(), _gaussian_optimizers(), max_steps)


refine_method = MethodSpecification(
    config=refine_trainer_config(),
    description="Single-image 360° reconstruction, refine stage: Gaussians seeded from a coarse run, refined with "
    "gsplat (--pipeline.model.coarse-config <coarse run>/config.yml).",
)
