"""Every schedule is a fraction of the run: a short and a long run both complete their learning-rate decay, timestep
annealing, camera widening, shading start, proposal warm-up and refine schedules."""

from pathlib import Path

import pytest
import torch

from single_image_nerf.guidance.distillation import ScoreDistillationGuidance
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig
from single_image_nerf.method_configs import refine_trainer_config
from single_image_nerf.run_length import step_at

from tiny_training import tiny_config, train, write_ball_image

LENGTHS = (1000, 10000)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return write_ball_image(tmp_path_factory.mktemp("photo") / "disc.png", size=32)


def coarse_pipeline(photo: Path, output: Path, steps: int):
    """A coarse pipeline (no prior, the stable-diffusion recipe's schedules) set up as the trainer does for a run of
    `steps`, without training."""
    config = tiny_config(photo, output, steps=steps)
    config.pipeline.model.shading_start = None  # the recipe's
    config.resolve()
    return config, config.pipeline.setup(device="cpu", test_mode="val")


@pytest.mark.parametrize("steps", LENGTHS)
def test_coarse_schedules_complete_whatever_the_length(photo, tmp_path, steps):
    config, pipeline = coarse_pipeline(photo, tmp_path, steps)
    assert pipeline.datamanager.run_steps == steps and pipeline.model.run_steps == steps
    # camera widening: 45 degrees at the start, half way at a tenth of the run, the full circle by a fifth
    ranges = pipeline.datamanager.novel_view_ranges
    assert ranges(0).azimuth_half_width == 45.0
    assert ranges(steps // 10).azimuth_half_width == pytest.approx(112.5)
    assert ranges(steps // 5).azimuth_half_width == 180.0
    # shading begins at a fifth of the run
    model = pipeline.model
    model.step = steps // 5 - 1
    assert not model.shading_begun
    model.step = steps // 5
    assert model.shading_begun
    # proposal warm-up: the update interval reaches its maximum at a fifth of the run
    schedule = model.proposal_sampler.update_sched
    assert schedule(steps // 10) == pytest.approx(2.5) and schedule(steps // 5) == 5.0
    # learning-rate decay to a tenth by the last step
    scheduler_config = config.optimizers["fields"]["scheduler"]
    assert scheduler_config.max_steps == steps
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1e-2)
    scheduler = scheduler_config.setup().get_scheduler(optimizer, 1e-2)
    assert scheduler.lr_lambdas[0](steps) == pytest.approx(0.1) and scheduler.lr_lambdas[0](steps // 2) > 0.1


@pytest.mark.parametrize("steps", LENGTHS)
def test_timestep_annealing_completes_whatever_the_length(steps):
    context = GuidanceContext(device=torch.device("cpu"), run_steps=steps)
    stable_diffusion = ScoreDistillationGuidance(StableDiffusionGuidanceConfig(), context)
    assert stable_diffusion.timestep_range(0) == pytest.approx((0.02, 0.98))
    assert stable_diffusion.timestep_range(steps // 2) == pytest.approx((0.02, 0.74))
    assert stable_diffusion.timestep_range(steps) == pytest.approx((0.02, 0.5))
    zero123 = ScoreDistillationGuidance(Zero123GuidanceConfig(model_path="zero123-xl"), context)
    assert zero123.timestep_range(0) == pytest.approx((0.4, 0.85))
    assert zero123.timestep_range(step_at(1 / 3, steps)) == pytest.approx((0.2, 0.5))
    stable_zero123 = ScoreDistillationGuidance(Zero123GuidanceConfig(model_path="stable-zero123"), context)
    assert stable_zero123.timestep_range(step_at(1 / 12, steps)) == pytest.approx((0.7, 0.98))
    assert stable_zero123.timestep_range(step_at(1 / 3, steps)) == pytest.approx((0.3, 0.8))


@pytest.mark.parametrize("steps", LENGTHS)
def test_refine_schedules_follow_the_run(steps):
    config = refine_trainer_config(max_steps=steps)
    assert config.optimizers["means"]["scheduler"].max_steps is None  # follows the run once resolved
    model_config = config.pipeline.model
    from single_image_nerf.refine.splat_model import RefineSplatModel
    from nerfstudio.data.scene_box import SceneBox

    model = RefineSplatModel(model_config, scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])),
                             num_train_data=1, metadata={})
    model.run_steps = steps
    strategy = model.strategy
    assert strategy.refine_start_iter == steps // 20
    assert strategy.refine_stop_iter == steps and strategy.refine_scale2d_stop_iter == steps


def test_a_short_and_a_long_training_both_finish_their_decay(photo, tmp_path):
    """Through nerfstudio's Trainer: the learning rate of the last step is lr_final, for 6 and 12 steps alike."""
    for steps in (6, 12):
        config = tiny_config(photo, tmp_path / f"run{steps}", steps=steps, rays=64)
        config.steps_per_save = steps
        trainer = train(config)
        lr = trainer.optimizers.optimizers["fields"].param_groups[0]["lr"]
        assert lr == pytest.approx(1e-3, rel=0.05), (steps, lr)
        assert trainer.pipeline.datamanager.run_steps == steps
