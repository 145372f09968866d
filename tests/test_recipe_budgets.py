"""Each prior's budget per device: on CUDA the reference's views per step, render sizes (stages at fractions of the
run) and run length; on a CPU one view a step over a longer run; a user's option wins; config.yml holds them; and
however many views a step renders, the step is one batched render and one batched UNet call."""

import pytest
import torch
import yaml

from single_image_nerf.data.datamanager import NovelViewConfig
from single_image_nerf.guidance import recipes
from single_image_nerf.guidance.magic123 import Magic123GuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig
from single_image_nerf.method_configs import coarse_trainer_config, refine_trainer_config
from single_image_nerf.run_length import stage_index, step_at

from tiny_training import tiny_config, write_ball_image
from tiny_zero123 import tiny_zero123_folder


def _resolved(guidance, device: str, **options):
    config = coarse_trainer_config(**options)
    config.machine.device_type = device
    config.pipeline.guidance = guidance
    config.resolve()
    return config


@pytest.mark.parametrize("model, views", [("zero123-xl", (12, 4, 2)), ("stable-zero123", (12, 8, 4))])
def test_on_cuda_the_zero123_family_follows_threestudio_and_a_cpu_keeps_its_budget(model, views):
    gpu = _resolved(Zero123GuidanceConfig(model_path=model), "cuda")
    novel = gpu.pipeline.datamanager.novel_views
    assert (novel.views_per_step, novel.resolution) == (views, (64, 128, 256))
    assert novel.stage_starts == pytest.approx((1 / 3, 1 / 2))  # steps 200 and 300 of 600
    assert gpu.max_num_iterations == 600 and gpu.pipeline.run_steps == 600 and gpu.pipeline.recipe_budget == "gpu"
    summary = gpu.pipeline.recipe_summary()
    assert "gpu budget" in summary and "trainer.max_steps 600" in summary
    assert f"views_per_step {' '.join(map(str, views))}," in summary and "resolution 64 128 256," in summary

    cpu = _resolved(Zero123GuidanceConfig(model_path=model), "cpu")
    novel = cpu.pipeline.datamanager.novel_views
    assert (novel.views_per_step, novel.resolution, novel.stage_starts) == ((1,), (64,), ())
    assert cpu.max_num_iterations == 5000 and cpu.pipeline.recipe_budget == "cpu"
    assert recipes.CPU_DEVIATION in cpu.pipeline.recipe_summary()


def test_magic123_and_the_refine_stage_take_their_run_length_from_their_references():
    gpu = _resolved(Magic123GuidanceConfig(), "cuda:0")
    assert gpu.max_num_iterations == 10000 and gpu.pipeline.datamanager.novel_views.resolution == (128,)
    assert _resolved(Magic123GuidanceConfig(), "cpu").max_num_iterations == 5000
    refine = refine_trainer_config()
    refine.pipeline.guidance = Zero123GuidanceConfig()
    refine.pipeline.datamanager.data = "unused"  # not read: the prior is given, not the coarse run's
    refine.machine.device_type = "cuda"
    refine.resolve()
    assert refine.max_num_iterations == 10000
    assert refine.pipeline.datamanager.novel_views.views_per_step == (1,)  # the refine datamanager's own


def test_a_user_option_wins_over_the_budget():
    config = _resolved(Zero123GuidanceConfig(), "cuda", max_steps=300)
    assert config.max_num_iterations == 300 and config.pipeline.run_steps == 300
    assert "(--max-num-iterations)" in config.pipeline.recipe_summary()
    config = coarse_trainer_config()
    config.machine.device_type = "cuda"
    config.pipeline.guidance = Zero123GuidanceConfig()
    novel = config.pipeline.datamanager.novel_views
    novel.views_per_step = 1  # one number, as a script or an older config.yml gives it
    config.resolve()
    assert novel.views_per_step == (1,) and novel.resolution == (64, 128, 256)
    assert "views_per_step 1*" in config.pipeline.recipe_summary()
    config = coarse_trainer_config()
    config.pipeline.guidance = Zero123GuidanceConfig()
    config.pipeline.recipe_budget = "gpu"  # the GPU recipe on a CPU
    config.machine.device_type = "cpu"
    config.resolve()
    assert config.max_num_iterations == 600 and config.pipeline.datamanager.novel_views.views_per_step == (12, 4, 2)


def test_stages_begin_at_fractions_of_the_run():
    for run_steps in (600, 6000):
        starts = (1 / 3, 1 / 2)
        assert [stage_index(step, starts, run_steps) for step in
                (0, step_at(1 / 3, run_steps) - 1, step_at(1 / 3, run_steps), run_steps // 2, run_steps)] == [
            0, 0, 1, 2, 2]


def _zero123_pipeline(tmp_path, steps: int = 12):
    config = tiny_config(write_ball_image(tmp_path / "disc.png", size=32), tmp_path / "out", steps=steps, rays=64)
    config.pipeline.guidance = Zero123GuidanceConfig(model_path=str(tiny_zero123_folder()), resolution=32)
    novel = config.pipeline.datamanager.novel_views
    novel.views_per_step, novel.resolution, novel.stage_starts = (3, 2), (8, 16), (0.5,)
    config.resolve()
    return config, config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)


def test_config_yml_holds_the_budget_and_each_stage_renders_its_views_in_one_pass_and_one_unet_call(tmp_path,
                                                                                                      monkeypatch):
    config, pipeline = _zero123_pipeline(tmp_path)
    config.set_timestamp()
    config.save_config()
    saved = yaml.load((config.get_base_dir() / "config.yml").read_text(), Loader=yaml.Loader)
    assert saved.pipeline.recipe_budget == "cpu" and saved.pipeline.datamanager.novel_views.stage_starts == (0.5,)
    assert saved.pipeline.datamanager.novel_views.views_per_step == (3, 2) and saved.max_num_iterations == 12

    pipeline.train()
    model, unet = pipeline.model, pipeline.guidance.unet
    renders, unet_batches = [], []
    original = model.get_outputs
    monkeypatch.setattr(model, "get_outputs", lambda bundle, **kwargs: renders.append(bundle.shape) or original(
        bundle, **kwargs))
    unet.register_forward_hook(lambda module, inputs, output: unet_batches.append(inputs[0].shape[0]))
    for step, (views, side) in ((0, (3, 8)), (6, (2, 16))):
        renders.clear()
        unet_batches.clear()
        model.update_to_step(step)
        _, losses, _ = pipeline.get_train_loss_dict(step)
        assert renders == [(64,), (views * side * side,)]  # the reference rays, then every novel view at once
        assert unet_batches == [2 * views]  # one UNet call: every view, unconditional and conditional
        assert pipeline.last_novel_views[2].shape == (views, 3, side, side)
        assert torch.isfinite(losses["guidance_zero123_sds_loss"])


def test_a_one_stage_config_written_before_stages_existed_loads_as_one_stage():
    older = NovelViewConfig(views_per_step=1, resolution=128)  # a config.yml with no stage_starts field
    older.normalise()
    assert older.views_per_step == (1,) and older.resolution == (128,) and older.stage_starts == ()
    staged = NovelViewConfig(views_per_step=(12, 4, 2), resolution=None)
    staged.normalise()
    assert staged.stage_starts is None  # left for the recipe to fill
