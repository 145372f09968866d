"""Helpers for tests that train through nerfstudio's real Trainer on the CPU at tiny sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from single_image_nerf.guidance.base import NoGuidanceConfig
from single_image_nerf.method_configs import coarse_trainer_config, headless


def write_ball_image(path: Path, size: int = 64) -> Path:
    """An RGBA disc on a transparent background, its four quadrants coloured apart (left/right differ in red,
    top/bottom in green), so that a mirrored or upside-down camera cannot fit it."""
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    centre = (size - 1) / 2.0
    radius = np.hypot(rows - centre, cols - centre)
    alpha = np.clip(0.3 * size - radius + 0.5, 0.0, 1.0)
    rgb = np.stack([0.8 * (cols < centre) + 0.1, 0.8 * (rows > centre) + 0.1, np.full_like(rows, 0.3)], axis=-1)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    Image.fromarray(np.round(rgba * 255).astype(np.uint8)).save(path)
    return path


def tiny_config(data: Path, output_dir: Path, steps: int, image_size: int = 32, novel_resolution: int = 16,
                rays: int = 512) -> TrainerConfig:
    """The coarse method at tiny sizes on the CPU without a prior: small grid, few samples, checkpoints every 10
    steps (set `config.pipeline.guidance` for another prior)."""
    config = headless(coarse_trainer_config(max_steps=steps), "cpu", output_dir)
    config.steps_per_save = 10
    config.steps_per_eval_image = 10_000
    config.load_scheduler = True
    pipeline = config.pipeline
    pipeline.datamanager.data = data
    pipeline.guidance = NoGuidanceConfig()
    pipeline.datamanager.dataparser.image_size = image_size
    pipeline.datamanager.train_num_rays_per_batch = rays
    pipeline.datamanager.novel_views.resolution = novel_resolution
    model = pipeline.model
    model.implementation = "torch"
    model.num_levels = 8
    model.max_res = 128
    model.log2_hashmap_size = 14
    model.num_proposal_samples_per_ray = (32,)
    model.num_nerf_samples_per_ray = 24
    model.shading_start = 1.0  # albedo only
    return config


def train(config: TrainerConfig, load_dir: Optional[Path] = None) -> Trainer:
    """Set up and run nerfstudio's Trainer as ns-train does (config saved, then train)."""
    config.set_timestamp()
    if load_dir is not None:
        config.load_dir = load_dir
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer


def tiny_coarse_run(root: Path, steps: int) -> Path:
    """The config.yml of a tiny coarse run of `steps` on the ball photo (seeded, saved at its last step)."""
    import torch

    torch.manual_seed(0)
    config = tiny_config(write_ball_image(root / "disc.png", size=32), root / "outputs", steps=steps, rays=256)
    config.steps_per_save = steps
    train(config)
    return config.get_base_dir() / "config.yml"


def record_losses(pipeline) -> list:
    """Wrap the pipeline's loss so that each step's losses are kept as floats (read after the step)."""
    losses = []
    original = pipeline.get_train_loss_dict

    def recording(step):
        outputs, loss_dict, metrics = original(step)
        losses.append({name: float(value.detach()) for name, value in loss_dict.items()})
        return outputs, loss_dict, metrics

    pipeline.get_train_loss_dict = recording
    return losses
