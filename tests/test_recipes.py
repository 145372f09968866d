"""Each prior's recipe: it fills only the options left unset, the resolved values reach config.yml, an older
config.yml still loads, docs/guidance.md's table matches the data, and Zero123 reads the photo at its own size."""

from pathlib import Path

import pytest
import torch
import yaml

from single_image_nerf.data.camera_sampling import orbit_cameras
from single_image_nerf.guidance import recipes
from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.magic123 import Magic123GuidanceConfig
from single_image_nerf.guidance.oracle import OracleGuidanceConfig
from single_image_nerf.guidance.zero123 import Zero123GuidanceConfig, white_composite
from single_image_nerf.pipeline import SingleImagePipelineConfig

from tiny_training import tiny_config, write_ball_image
from tiny_zero123 import tiny_zero123_folder

ROOT = Path(__file__).resolve().parents[1]


def _value(config, path):
    for name in path.split("."):
        config = getattr(config, name)
    return config


def test_zero123_recipe_fixes_the_camera_at_the_reference_and_a_user_option_wins(tmp_path):
    config = tiny_config(write_ball_image(tmp_path / "disc.png"), tmp_path / "out", steps=300)
    pipeline = config.pipeline
    pipeline.guidance = Zero123GuidanceConfig()
    pipeline.model.shading_start = None
    pipeline.datamanager.dataparser.reference_fov = 30.0
    pipeline.datamanager.novel_views.radius_range = (2.4, 2.6)  # the user's
    pipeline.guidance.guidance_scale = 5.0  # the user's
    config.resolve()
    novel = pipeline.datamanager.novel_views
    assert novel.fov_range == (30.0, 30.0) and novel.radius_range == (2.4, 2.6)
    assert (novel.initial_azimuth_half_width, novel.widen_end) == (180.0, 0.0)
    assert pipeline.model.background == "white" and pipeline.model.shading_start == 1.0
    assert pipeline.guidance.guidance_scale == 5.0 and pipeline.guidance.weight == pytest.approx(0.2)
    summary = pipeline.recipe_summary()
    assert "zero123 recipe" in summary and "radius_range 2.4 2.6*" in summary and "guidance.guidance_scale 5*" in summary
    assert "schedules over 300 steps" in summary
    config.resolve()  # idempotent
    assert novel.radius_range == (2.4, 2.6) and pipeline.guidance.guidance_scale == 5.0


def test_the_resolved_options_are_what_config_yml_holds_and_an_older_config_yml_loads(tmp_path):
    config = tiny_config(write_ball_image(tmp_path / "disc.png"), tmp_path / "out", steps=40)
    config.pipeline.guidance = OracleGuidanceConfig(known_object="sphere")
    config.pipeline.model.background = None
    config.set_timestamp()
    config.save_config()
    saved = yaml.load((config.get_base_dir() / "config.yml").read_text(), Loader=yaml.Loader)
    assert saved.pipeline.model.background == "white" and saved.pipeline.guidance.weight == 1.0
    assert saved.pipeline.run_steps == 40 and saved.optimizers["fields"]["scheduler"].max_steps == 40
    assert saved.pipeline.datamanager.novel_views.widen_end == 0.0
    # A config.yml from before the recipes: the options of that time, none of today's.
    text = (config.get_base_dir() / "config.yml").read_text()
    for new, old in (("widen_end: 0.0", "widen_steps: 0"), ("shading_start: 1.0", "albedo_iters: 10000"),
                     ("proposal_warmup_end: 0.2", "proposal_warmup: 1000"), ("run_steps: 40\n", "")):
        assert new in text, new
        text = text.replace(new, old)
    old = yaml.load(text, Loader=yaml.Loader)
    pipeline = old.pipeline.setup(device="cpu", test_mode="inference")
    assert pipeline.datamanager.config.novel_views.widen_end == 0.0  # from the oracle recipe
    assert old.pipeline.model.shading_start == 1.0 and pipeline.config.run_steps == 5000


def test_the_docs_table_lists_every_recipe_value():
    text = (ROOT / "docs" / "guidance.md").read_text()
    options = SingleImagePipelineConfig.recipe_options
    missing = []
    for name, recipe in recipes.COARSE_RECIPES.items():
        if name == "none":
            continue
        rows = [(options[concept], value) for concept, value in recipe.settings.items()]
        rows += [(f"guidance.{field}", value) for field, value in recipe.guidance.items()]
        rows += [(f"guidance.{part}.{field}", value) for part, values in recipe.parts.items()
                 for field, value in values.items()]
        for path, sourced in rows:
            flag = "`--pipeline." + path.replace("_", "-") + "`"
            if not any(line.startswith(f"| {name} | {flag} |") and sourced.source in line for line in text.splitlines()):
                missing.append((name, path))
    assert not missing, f"docs/guidance.md's recipe table lacks {missing}"


def test_the_docs_table_lists_every_budget_value():
    text = (ROOT / "docs" / "guidance.md").read_text()
    options = {**SingleImagePipelineConfig.budget_options, "run_steps": "max_num_iterations"}
    missing = []
    for stage, table in (("coarse", recipes.COARSE_RECIPES), ("refine", recipes.REFINE_RECIPES)):
        for name, recipe in table.items():
            if name == "none":
                continue
            label = name if stage == "coarse" else f"{name}, refine"
            for budget in recipes.BUDGETS:
                for concept, sourced in recipe.budget(budget).items():
                    path = options[concept] if concept == "run_steps" else f"pipeline.{options[concept]}"
                    start = f"| {label} | `--{path.replace('_', '-')}` ({budget}) | "
                    value = sourced.value
                    shown = "(" + ", ".join(f"{v:.3g}" for v in value) + ")" if isinstance(value, tuple) else str(value)
                    if not any(line.startswith(start + shown + " | ") and sourced.source in line
                               for line in text.splitlines()):
                        missing.append((label, budget, concept))
    assert not missing, f"docs/guidance.md's budget table lacks {missing}"


def test_magic123_recipe_fills_each_prior_and_keeps_what_the_user_set():
    config = Magic123GuidanceConfig()
    config.zero123.weight = 40.0
    filled = recipes.apply(config, recipes.recipe_for(config))
    assert "zero123.weight" not in filled and config.zero123.weight == 40.0
    assert filled["stable_diffusion.weight"] == 0.025 and filled["weight"] == 1.0


def test_zero123_is_conditioned_on_the_photo_at_its_own_size_not_the_training_reference():
    rows, cols = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    photo = torch.stack([(rows // 4 % 2).float(), (cols // 4 % 2).float(), torch.zeros(256, 256),
                         torch.ones(256, 256)], dim=-1)  # a fine checkerboard
    small = torch.nn.functional.interpolate(photo.permute(2, 0, 1)[None], size=32, mode="area")[0].permute(1, 2, 0)
    reference = orbit_cameras(torch.zeros(1), torch.zeros(1), torch.full((1,), 2.5), torch.full((1,), 40.0), 32, 32)
    context = GuidanceContext(device=torch.device("cpu"), reference_image=small, reference_cameras=reference,
                              reference_photo=photo)
    guide = Zero123GuidanceConfig(model_path=str(tiny_zero123_folder()), resolution=256).setup(context=context)
    torch.testing.assert_close(guide.reference_image, white_composite(photo, 256))
    blurred = white_composite(small, 256)
    assert (guide.reference_image - blurred).abs().mean() > 0.1  # the fine pattern survives at 256 px
