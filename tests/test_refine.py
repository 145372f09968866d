"""The refine stage for real on the CPU: a tiny coarse run, then `single-image-refine` through nerfstudio's Trainer
(Gaussians seeded from the coarse field, the pure-torch rasteriser, gsplat's densification, the contextual loss with
a random VGG), its checkpoint loaded back as ns-export does, and one-line errors for a wrong coarse run."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from nerfstudio.models.splatfacto import SplatfactoModel
from nerfstudio.utils.eval_utils import eval_setup

from gsplat.strategy import DefaultStrategy
from nerfstudio.engine.callbacks import TrainingCallbackLocation

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.errors import UserInputError
from single_image_nerf.guidance import sds
from single_image_nerf.guidance.base import GuidanceConfig
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.method_configs import coarse_trainer_config, headless, refine_trainer_config
from single_image_nerf.refine.coarse_run import load_coarse_pipeline, read_coarse_config
from single_image_nerf.refine.splat_model import (RefineSplatModel, SeededStrategy, intrinsics_from_cameras,
                                                  viewmats_from_cameras)
from single_image_nerf.trainer import GuardedOptimizers

from tiny_training import record_losses, tiny_coarse_run

COARSE_STEPS = 15
REFINE_STEPS = 8
SEED_POINTS = 300


def tiny_refine_config(coarse_config: Path, output_dir: Path, steps: int):
    """The refine method at test sizes on the CPU: 300 seeds from a 32^3 grid, 32-pixel novel views, densification
    every 3 steps, the contextual loss on with random VGG weights."""
    config = headless(refine_trainer_config(max_steps=steps), "cpu", output_dir)
    config.steps_per_save = 1000
    config.steps_per_eval_image = 10_000
    pipeline = config.pipeline
    pipeline.guidance = GuidanceConfig()
    pipeline.datamanager.novel_views.resolution = 32
    model = pipeline.model
    model.coarse_config = coarse_config
    model.seed_num_points = SEED_POINTS
    model.seed_grid_resolution = 32
    model.seed_reference_scale = 0.2  # sharp seeds: the photo's colours per pixel at this tiny size
    model.densify_start = 1.0 / steps  # densification from the first step
    model.refine_every = 3
    model.contextual_loss_mult = 0.1
    model.contextual_vgg_weights = "random"
    model.contextual_layers = ("relu2_2",)
    model.contextual_image_size = 32
    return config


def reference_psnr(pipeline) -> float:
    """PSNR of the model's render of the reference camera against the reference composited on white."""
    was_training = pipeline.training
    pipeline.eval()
    camera, batch = pipeline.datamanager.next_eval(0)
    outputs = pipeline.model.get_outputs_for_camera(camera)
    metrics, _ = pipeline.model.get_image_metrics_and_images(outputs, batch)
    pipeline.train(was_training)
    return metrics["psnr"]


@pytest.fixture(scope="module")
def coarse_run(tmp_path_factory):
    return tiny_coarse_run(tmp_path_factory.mktemp("coarse"), COARSE_STEPS)


@pytest.fixture(scope="module")
def refined(coarse_run, tmp_path_factory):
    """A refine run set up and trained; the seeded state and losses of its steps are kept for the tests."""
    config = tiny_refine_config(coarse_run, tmp_path_factory.mktemp("refine") / "outputs", REFINE_STEPS)
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    seeded = {name: value.detach().clone() for name, value in pipeline.model.gauss_params.items()}
    seeded["reference_visible"] = pipeline.model.reference_visible.clone()
    seeded_psnr = reference_psnr(pipeline)
    losses = record_losses(pipeline)
    trainer.train()
    return {"trainer": trainer, "config": config, "seeded": seeded, "seeded_psnr": seeded_psnr, "losses": losses}


def test_refine_is_registered_as_a_splatfacto_method():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert "single-image-refine" in methods and "single-image-nerf" in methods
    assert "coarse" in descriptions["single-image-refine"]
    assert issubclass(methods["single-image-refine"].pipeline.model._target, SplatfactoModel)


def test_refine_trains_from_the_coarse_run(refined):
    trainer, seeded = refined["trainer"], refined["seeded"]
    model = trainer.pipeline.model
    assert isinstance(model, RefineSplatModel) and isinstance(model, SplatfactoModel)
    tagged = seeded["reference_visible"]
    assert int((~tagged).sum()) == SEED_POINTS and 30 < int(tagged.sum()) <= 32 * 32  # hidden + reference-view seeds
    # The seeds come from the coarse field: inside the scene box, around the origin.
    assert seeded["means"].abs().max() < 1.0 and 0.05 < seeded["means"].norm(dim=-1).mean() < 0.95
    # Every step ran with finite losses, including the contextual loss on the novel views.
    losses = refined["losses"]
    assert len(losses) == REFINE_STEPS
    for step_losses in losses:
        assert {"rgb_loss", "mask_loss", "contextual_loss"} <= set(step_losses)
        assert all(torch.isfinite(torch.tensor(value)) for value in step_losses.values()), step_losses
    assert trainer.pipeline.skipped_steps == 0
    # gsplat's strategy densified (steps 3 and 6) and the Gaussians moved, all finite.
    assert model.num_points > SEED_POINTS
    for name, value in model.gauss_params.items():
        assert torch.isfinite(value).all(), name
    moved = (model.means.detach()[:SEED_POINTS] - seeded["means"][:SEED_POINTS]).norm(dim=-1)
    assert float(moved.max()) > 1e-5
    # The seeds reproduce the photo (26.4 dB at 32 px) and the 8 steps keep it (26.3 dB). Growing the reference-view
    # Gaussians too (duplicating and splitting them at steps 3 and 6) lost 3.6 dB of it (22.8 dB).
    assert refined["seeded_psnr"] > 25.0
    assert reference_psnr(trainer.pipeline) > refined["seeded_psnr"] - 0.5
    # Growth left the reference-view Gaussians alone: as many tagged as seeded (pruning may only remove some).
    assert int(model.reference_visible.sum()) <= int(tagged.sum())


def sh_colours(model) -> torch.Tensor:
    """The view-independent colour of every Gaussian (N, 3), as the rasteriser evaluates a degree-0 SH."""
    return (model.gauss_params["features_dc"].detach() * 0.28209479177387814 + 0.5).clamp_min(0.0)


def test_a_short_refine_keeps_the_fronts_colours(refined):
    """8 steps with the contextual loss on and densification at steps 3 and 6: every Gaussian tagged as seen by the
    reference camera (its children too) still has one of the photo's seeded colours, bit for bit, and no SH detail
    on top; the field-coloured rest was trained."""
    trainer, seeded = refined["trainer"], refined["seeded"]
    model = trainer.pipeline.model
    tagged = model.reference_visible
    assert tagged.shape[0] == model.num_points and model.strategy_state["reference_visible"] is tagged
    photo = torch.as_tensor(model.kwargs["metadata"]["rgba"], dtype=torch.float32).reshape(-1, 4)
    seeded_front = seeded["features_dc"][seeded["reference_visible"]]
    now = model.gauss_params["features_dc"].detach()
    assert int(tagged.sum()) >= int(seeded["reference_visible"].sum())
    matches = (now[tagged][:, None, :] == seeded_front[None, :, :]).all(dim=-1).any(dim=1)
    assert matches.all(), f"{int((~matches).sum())} reference-view Gaussians changed colour"
    assert torch.all(model.gauss_params["features_rest"].detach()[tagged] == 0)
    # Those colours are the photo's pixels (up to the SH round trip).
    distance = (sh_colours(model)[tagged][:, None, :] - photo[None, :, :3]).abs().amax(dim=-1).amin(dim=1)
    assert distance.max() < 1e-4
    hidden_now, hidden_seeded = now[~tagged][:SEED_POINTS], seeded["features_dc"][~seeded["reference_visible"]]
    assert (hidden_now - hidden_seeded).abs().max() > 1e-4


def test_densification_carries_the_reference_tag_to_children(refined):
    """gsplat's duplicate and split, run on the model's own parameters, optimisers and strategy state, give the
    children of a tagged Gaussian the tag and those of an untagged one none; remove drops it with the Gaussian."""
    import copy

    from gsplat.strategy.ops import duplicate, remove, split

    model = copy.deepcopy(refined["trainer"].pipeline.model)  # its optimisers come along, holding the copies
    assert model.optimizers["means"].param_groups[0]["params"][0] is model.gauss_params["means"]
    state = model.strategy_state
    tagged = state["reference_visible"]
    first_tagged, first_hidden = int(torch.nonzero(tagged)[0]), int(torch.nonzero(~tagged)[0])
    count = model.num_points
    mask = torch.zeros(count, dtype=torch.bool)
    mask[[first_tagged, first_hidden]] = True
    duplicate(model.gauss_params, model.optimizers, state, mask)
    assert state["reference_visible"][count:].tolist() == [True, False]
    mask = torch.zeros(count + 2, dtype=torch.bool)
    mask[count] = True  # split the tagged clone: its two children come last
    split(model.gauss_params, model.optimizers, state, mask)
    assert state["reference_visible"][-2:].tolist() == [True, True]
    assert state["reference_visible"].shape[0] == model.num_points == count + 3
    keep_tags = state["reference_visible"].clone()
    mask = torch.zeros(count + 3, dtype=torch.bool)
    mask[-1] = True
    remove(model.gauss_params, model.optimizers, state, mask)
    assert torch.equal(state["reference_visible"], keep_tags[:-1])
    model.step_post_backward(model.step)  # no renders recorded: only the buffer follows the state
    assert torch.equal(model.reference_visible, state["reference_visible"])


def test_growth_leaves_the_reference_view_gaussians_alone(refined):
    """With every Gaussian's screen-space gradient and size above the growth thresholds, the strategy splits every
    hidden Gaussian (and clones the small ones) and grows no tagged one: the tagged count stays."""
    import copy

    model = copy.deepcopy(refined["trainer"].pipeline.model)
    state, strategy = model.strategy_state, model.strategy
    tagged = state["reference_visible"].clone()
    count = model.num_points
    state["grad2d"] = torch.full((count,), 10.0 * strategy.grow_grad2d)
    state["count"] = torch.ones(count)
    state["radii"] = torch.ones(count)
    small = ~tagged & (torch.arange(count) % 2 == 0)  # below grow_scale3d: cloned as well as split
    with torch.no_grad():
        model.gauss_params["scales"][small] = math.log(0.1 * strategy.grow_scale3d)
    duplicated, split = strategy._grow_gs(model.gauss_params, model.optimizers, state, step=1)
    hidden = int((~tagged).sum())
    assert split == hidden and int(small.sum()) <= duplicated <= hidden  # every hidden one split, small ones cloned
    assert model.num_points == count + duplicated + split
    assert int(state["reference_visible"].sum()) == int(tagged.sum())


def test_refine_run_sits_beside_the_coarse_run_and_its_checkpoint_loads_as_ns_export_loads_it(refined, coarse_run):
    trainer, config = refined["trainer"], refined["config"]
    assert config.experiment_name == read_coarse_config(coarse_run).experiment_name
    checkpoints = sorted(trainer.checkpoint_dir.glob("step-*.ckpt"))
    assert [path.name for path in checkpoints] == [f"step-{REFINE_STEPS - 1:09d}.ckpt"]
    saved = torch.load(checkpoints[-1])  # weights_only=True: plain floats in the scheduler states
    assert not [key for key in saved["pipeline"] if "vgg" in key or "contextual" in key]  # the frozen VGG stays out
    config_path = config.get_base_dir() / "config.yml"
    assert yaml.load(config_path.read_text(), Loader=yaml.Loader).pipeline.model.coarse_config == coarse_run
    _, pipeline, _, step = eval_setup(config_path, test_mode="inference")
    assert step == REFINE_STEPS - 1
    loaded = pipeline.model
    assert isinstance(loaded, SplatfactoModel) and loaded.num_points == trainer.pipeline.model.num_points
    for name, value in trainer.pipeline.model.gauss_params.items():
        assert torch.equal(loaded.gauss_params[name].detach().cpu(), value.detach().cpu()), name
    camera = pipeline.datamanager.train_dataparser_outputs.cameras[0:1]
    trainer.pipeline.eval()
    expected = trainer.pipeline.model.get_outputs_for_camera(camera)["rgb"]
    assert torch.allclose(loaded.get_outputs_for_camera(camera)["rgb"], expected, atol=1e-5)


def test_coarse_run_loads_with_its_latest_checkpoint(coarse_run):
    pipeline = load_coarse_pipeline(coarse_run, "cpu")
    assert not pipeline.training and pipeline.guidance is None
    saved = torch.load(sorted((coarse_run.parent / "nerfstudio_models").glob("step-*.ckpt"))[-1])
    key = next(k for k in saved["pipeline"] if k.startswith("_model.field."))
    assert torch.equal(pipeline.state_dict()[key], saved["pipeline"][key])


def test_wrong_coarse_configs_fail_with_one_line(refined, coarse_run, tmp_path):
    refine_config = refined["config"].get_base_dir() / "config.yml"
    not_yaml = tmp_path / "config.yml"
    not_yaml.write_text("{not: [yaml")
    cases = {
        None: "coarse-config is required",
        tmp_path / "missing.yml": "does not exist",
        tmp_path: "is a folder",
        not_yaml: "not a nerfstudio config.yml",
        refine_config: "is a run of 'single-image-refine'",
    }
    for path, message in cases.items():
        with pytest.raises(UserInputError) as error:
            read_coarse_config(path)
        assert message in str(error.value) and "\n" not in str(error.value), (path, str(error.value))
    # Through the trainer as ns-train builds it: a refine run given as the coarse run stops at setup.
    config = tiny_refine_config(refine_config, tmp_path / "outputs", 2)
    with pytest.raises(UserInputError, match="is a run of 'single-image-refine'"):
        config.setup(local_rank=0, world_size=1).setup()


def test_viewmats_follow_the_documented_camera():
    # The reference camera at azimuth 0 sits on +X looking at the origin: the origin is 2.5 in front (OpenCV +Z).
    c2w = torch.tensor([[[0.0, 0.0, 1.0, 2.5], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    viewmat = viewmats_from_cameras(c2w)[0]
    origin = viewmat @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(origin[:3], torch.tensor([0.0, 0.0, 2.5]))
    up = viewmat @ torch.tensor([0.0, 0.0, 1.0, 1.0])  # world +Z is image up: OpenCV -Y
    assert float(up[1]) < 0.0
    right = viewmat @ torch.tensor([0.0, 1.0, 0.0, 1.0])  # world +Y is image right: OpenCV +X
    assert float(right[0]) > 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_refine_trains_on_cuda_through_gsplat(coarse_run, tmp_path):
    config = tiny_refine_config(coarse_run, tmp_path / "outputs", REFINE_STEPS)
    config.machine.device_type = "cuda"
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer.pipeline.model.means.is_cuda
    seeded_psnr = reference_psnr(trainer.pipeline)
    trainer.train()
    model = trainer.pipeline.model
    assert model.num_points > SEED_POINTS and all(torch.isfinite(v).all() for v in model.gauss_params.values())
    assert reference_psnr(trainer.pipeline) > seeded_psnr - 1.0


def test_intrinsics_are_nerfstudios_built_on_the_cameras_device():
    cameras = orbit_cameras(torch.tensor([0.0, 90.0]), torch.tensor([10.0, -20.0]), torch.tensor([2.5, 3.0]),
                            torch.tensor([40.0, 50.0]), 48, 32)
    assert torch.equal(intrinsics_from_cameras(cameras), cameras.get_intrinsics_matrices())
    on_meta = cameras.to("meta")
    assert intrinsics_from_cameras(on_meta).device.type == "meta"
    assert viewmats_from_cameras(on_meta.camera_to_worlds).device.type == "meta"


def strategy_state(strategy, info, params):
    state = strategy.initialize_state(scene_scale=1.0)
    strategy._update_state(params, state, info, packed=False)
    strategy._update_state(params, state, info, packed=False)
    return state


def test_dense_strategy_statistics_equal_gsplats():
    generator = torch.Generator().manual_seed(0)
    params = {"means": torch.zeros(50, 3)}
    means2d = torch.zeros(3, 50, 2)
    means2d.grad = torch.randn(3, 50, 2, generator=generator)
    radii = torch.randint(0, 4, (3, 50), generator=generator, dtype=torch.int32)
    means2d.grad[radii == 0] = float("nan")  # a Gaussian no camera sees must not count, whatever its gradient
    info = {"means2d": means2d, "radii": radii, "width": 40, "height": 30, "n_cameras": 3, "gaussian_ids": None}
    ours = strategy_state(SeededStrategy(refine_scale2d_stop_iter=100), info, params)
    theirs = strategy_state(DefaultStrategy(refine_scale2d_stop_iter=100), info, params)
    assert torch.allclose(ours["grad2d"], theirs["grad2d"], rtol=1e-6) and torch.isfinite(ours["grad2d"]).all()
    assert torch.equal(ours["count"], theirs["count"]) and float(ours["count"].max()) == 6.0
    # The largest radius over the cameras (gsplat writes duplicates last-wins, which its own comment calls a stand-in
    # for a scatter max), as a fraction of the image's longer side.
    assert torch.equal(ours["radii"], radii.float().amax(dim=0) / 40.0)
    single = {**info, "means2d": means2d[:1], "radii": radii[:1], "n_cameras": 1}
    single["means2d"].grad = means2d.grad[:1]
    ours = strategy_state(SeededStrategy(refine_scale2d_stop_iter=100), single, params)
    theirs = strategy_state(DefaultStrategy(refine_scale2d_stop_iter=100), single, params)
    assert torch.equal(ours["radii"], theirs["radii"]) and torch.equal(ours["count"], theirs["count"])


def run_step(trainer, step: int) -> None:
    """One training step as nerfstudio's Trainer.train runs it: callbacks before, the iteration, callbacks after."""
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def snapshot(trainer) -> dict:
    """Every current Gaussian parameter, the Adam state of the parameters the optimisers hold now, and the
    densification strategy's statistics, cloned."""
    model, optimizers = trainer.pipeline.model, trainer.optimizers
    adam = {}
    for group, optimizer in optimizers.optimizers.items():
        held = [parameter for param_group in optimizer.param_groups for parameter in param_group["params"]]
        for index, parameter in enumerate(held):
            for key, value in optimizer.state[parameter].items():
                adam[f"{group}.{index}.{key}"] = value.clone()
    return {
        "params": {name: value.detach().clone() for name, value in model.gauss_params.items()},
        "adam": adam,
        "strategy": {name: value.clone() for name, value in model.strategy_state.items()
                     if isinstance(value, torch.Tensor)},
    }


def assert_bitwise_equal(before: dict, after: dict) -> None:
    for part in ("params", "adam", "strategy"):
        assert before[part].keys() == after[part].keys(), part
        for name, value in before[part].items():
            assert torch.equal(after[part][name], value), f"{part} {name} changed"


def test_a_nan_gradient_after_densification_leaves_params_adam_and_strategy_untouched(coarse_run, tmp_path,
                                                                                          monkeypatch, capsys):
    config = tiny_refine_config(coarse_run, tmp_path / "outputs", 12)
    config.pipeline.model.refine_every = 2  # densify at steps 4, 6, ... (pause after the step-0 reset: 1 + 2)
    config.pipeline.model.contextual_loss_mult = 0.0
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    seeded_means = model.gauss_params["means"]
    for step in range(6):
        run_step(trainer, step)
    # gsplat's densification replaced the Parameter objects, in the model and in the optimisers.
    assert model.gauss_params["means"] is not seeded_means and model.num_points != SEED_POINTS
    assert trainer.optimizers.optimizers["means"].param_groups[0]["params"][0] is model.gauss_params["means"]
    assert model.strategy_state["count"].sum() > 0  # step 5 was accumulated: the statistics are live
    before, skipped = snapshot(trainer), trainer.pipeline.skipped_steps
    original = model.get_loss_dict

    def nan_gradient(*args, **kwargs):
        losses = original(*args, **kwargs)
        # sqrt at 0: a finite loss whose gradient is 0 * inf = NaN in every current mean.
        losses["rgb_loss"] = losses["rgb_loss"] + torch.sqrt(0.0 * model.gauss_params["means"].sum())
        return losses

    monkeypatch.setattr(model, "get_loss_dict", nan_gradient)
    run_step(trainer, 6)  # a densification step: skipped, it must not densify either
    assert_bitwise_equal(before, snapshot(trainer))
    assert trainer.pipeline.skipped_steps == skipped + 1 and model.step_infos == []
    assert "non-finite gradients in means; this step is skipped" in " ".join(capsys.readouterr().out.split())
    monkeypatch.undo()
    run_step(trainer, 7)  # the next finite step trains again
    after = snapshot(trainer)
    assert not torch.equal(after["params"]["means"], before["params"]["means"])
    assert all(torch.isfinite(value).all() for value in after["params"].values())
    assert after["strategy"]["count"].sum() > before["strategy"]["count"].sum()  # and the strategy counts again


def test_the_guard_waits_on_the_device_once_per_step(monkeypatch):
    parameters = {f"group{index}": [torch.nn.Parameter(torch.randn(5)) for _ in range(3)] for index in range(4)}
    for group in parameters.values():
        for parameter in group:
            parameter.grad = torch.randn(5)
    config = {name: {"optimizer": refine_trainer_config().optimizers["scales"]["optimizer"], "scheduler": None}
              for name in parameters}
    optimizers = GuardedOptimizers(config, parameters)
    reads = []
    for method in ("tolist", "item", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _original=original, _name=method, **k: reads.append(_name)
                            or _original(self, *a, **k))
    assert optimizers._skip(list(parameters)) is False
    assert reads == ["tolist"]
    parameters["group2"][1].grad[3] = float("inf")
    reads.clear()
    assert optimizers._skip(list(parameters)) is True
    assert reads == ["tolist"] and all(p.grad is None for group in parameters.values() for p in group)


def test_refine_follows_the_coarse_prior_with_the_refine_recipe(tmp_path):
    """The refine default takes the coarse run's prior (a zero123 run refines with Zero123, a stable-diffusion run
    with Stable Diffusion and its prompt) with threestudio's Magic123 refine values, not the coarse schedule."""
    from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig
    from single_image_nerf.refine.pipeline import CoarsePriorConfig

    for coarse_guidance, expected in ((StableDiffusionGuidanceConfig(prompt="a red ball"), (0.025, 100.0)),
                                      (Zero123GuidanceConfig(model_path="/models/zero123"), (1.0, 5.0))):
        coarse = coarse_trainer_config()
        coarse.pipeline.guidance = coarse_guidance
        coarse.pipeline.datamanager.data = tmp_path / "data"
        coarse.set_timestamp()
        coarse.output_dir = tmp_path / "outputs"
        coarse.resolve()
        path = tmp_path / "config.yml"
        path.write_text(yaml.dump(coarse))
        config = refine_trainer_config(max_steps=1000)
        assert isinstance(config.pipeline.guidance, CoarsePriorConfig)
        config.pipeline.model.coarse_config = path
        config.resolve()
        refine = config.pipeline.guidance
        assert type(refine) is type(coarse_guidance) and refine.model_path == coarse_guidance.model_path
        assert (refine.weight, refine.guidance_scale) == expected
        assert (refine.t_range, refine.t_range_end, refine.anneal) == ((0.2, 0.6), (0.2, 0.6), "none")
        assert getattr(refine, "prompt", "a red ball") == "a red ball"
        white = isinstance(coarse_guidance, Zero123GuidanceConfig)
        assert config.pipeline.model.background_color == ("white" if white else "random")
        novel = config.pipeline.datamanager.novel_views
        assert novel.fov_range == ((40.0, 40.0) if white else (35.0, 45.0)) and novel.resolution == (128,)
        # the coarse config the refine stage read keeps its own schedule
        assert coarse.pipeline.guidance.t_range != (0.2, 0.6)




def test_contextual_loss_without_its_weights_says_so_in_one_line_and_trains_on(refined, tmp_path, monkeypatch, capsys):
    """On by default with ImageNet VGG16 weights; where they cannot be had (here: downloads off, empty cache) one line
    says why and how to turn the loss off, and the novel-view losses go on without it."""
    import copy

    from single_image_nerf.refine.splat_model import RefineSplatModelConfig

    assert RefineSplatModelConfig().contextual_loss_mult > 0 and RefineSplatModelConfig().contextual_vgg_weights == "imagenet"
    monkeypatch.setenv("SINGLE_IMAGE_NERF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SINGLE_IMAGE_NERF_OFFLINE", "1")
    model = copy.deepcopy(refined["trainer"].pipeline.model)
    object.__setattr__(model, "_contextual", None)
    model.config = copy.deepcopy(model.config)
    model.config.contextual_vgg_weights = "imagenet"
    capsys.readouterr()
    assert model.prepare_contextual_loss() is False
    views = {"rgb": torch.rand(1, 3, 16, 16, requires_grad=True), "accumulation": torch.rand(1, 16, 16, 1)}
    losses = model.get_novel_view_loss_dict(views)
    assert "contextual_loss" not in losses and losses
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Contextual loss off:"), lines
    assert "SINGLE_IMAGE_NERF_OFFLINE" in lines[0] and "contextual-loss-mult 0" in lines[0]
