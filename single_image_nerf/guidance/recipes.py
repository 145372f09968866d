"""Each prior's recipe: the defaults a prior needs across the whole method (novel cameras, background, shading,
render size) and inside its guidance (loss weight against the reference losses, guidance scale, t range and its
annealing), as data, each value with the reference it follows.

A recipe fills only the options left unset (None): a user's explicit option always wins. The pipeline applies the
recipe of its prior when it is set up (`SingleImagePipelineConfig.resolve`), so the resolved values are printed at the
start of training and written to config.yml; a guidance built on its own applies its own part (`apply`).

A recipe also has a budget per device (`budgets`): views per step, the render size and the run's length. On CUDA
(the gpu budget) they are the reference's: threestudio's Zero123 renders 12, 4, then 2 views a step at 64, 128, then
256 px over 600 steps. On a CPU (the cpu budget, also Apple's MPS) one view a step at 64 px over today's 5000 steps:
the CPU budget, stated as a deviation. `--pipeline.recipe-budget` picks a budget on any device.

Schedules are fractions of the run (`--max-num-iterations`). Loss weights are on our scale: the reference colour loss
weighs 1000 (`rgb_loss_mult`), so a reference's `lambda_sds / lambda_rgb` is multiplied by 1000. docs/guidance.md
shows every value beside its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional

THREESTUDIO = "threestudio-project/threestudio@28d9d80"
TS_ZERO123 = f"{THREESTUDIO} configs/zero123.yaml"
TS_STABLE_ZERO123 = f"{THREESTUDIO} configs/stable-zero123.yaml"
TS_MAGIC123_COARSE = f"{THREESTUDIO} configs/magic123-coarse-sd.yaml"
TS_MAGIC123_REFINE = f"{THREESTUDIO} configs/magic123-refine-sd.yaml"
TS_DREAMFUSION = f"{THREESTUDIO} configs/dreamfusion-sd.yaml"
TS_PROLIFICDREAMER = f"{THREESTUDIO} configs/prolificdreamer.yaml"
TS_SOLID_BACKGROUND = f"{THREESTUDIO} threestudio/models/background/solid_color_background.py"
REALFUSION = "lukemelas/realfusion@3ec69d0"
STABLE_DREAMFUSION = "ashawkey/stable-dreamfusion@5550b91 main.py"

GPU_BUDGET = "gpu"
"""The reference's views per step, render sizes and run length: the budget on CUDA."""
CPU_BUDGET = "cpu"
"""One view a step at a small size over a longer run: the budget elsewhere."""
BUDGETS = (GPU_BUDGET, CPU_BUDGET)


def budget_of_device(device) -> str:
    """The budget a device gets: gpu on CUDA ("cuda", "cuda:1", a torch.device), cpu elsewhere (a CPU, MPS)."""
    return GPU_BUDGET if str(device).startswith("cuda") else CPU_BUDGET


REFERENCE_CAMERA = "reference"
"""A camera range fixed at the reference camera's value (its field of view or its distance)."""


@dataclass(frozen=True)
class Sourced:
    """One default and the reference it follows; `deviation` says where and why ours differs from it."""

    value: Any
    source: str
    deviation: str = ""


def _frozen(values: Dict[str, Sourced]) -> Mapping[str, Sourced]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class Recipe:
    """What one prior sets, for one stage."""

    name: str
    """The recipe's name (the prior's subcommand, or stable-zero123)."""
    settings: Mapping[str, Sourced]
    """Method-wide settings by concept (novel_fov, novel_radius, initial_azimuth_half_width, widen_end, background,
    shading_start); each pipeline maps a concept to its own option."""
    guidance: Mapping[str, Sourced]
    """Fields of the guidance config (weight, guidance_scale, t_range, t_range_end, anneal, anneal_start, anneal_end)."""
    parts: Mapping[str, Mapping[str, Sourced]] = field(default_factory=lambda: MappingProxyType({}))
    """Fields of a joint prior's sub-configs, by the sub-config's field name (magic123: stable_diffusion, zero123)."""
    budgets: Mapping[str, Mapping[str, Sourced]] = field(default_factory=lambda: MappingProxyType({}))
    """By budget (gpu, cpu): views_per_step and novel_resolution (one value per stage of the run), stage_starts
    (fractions of the run at which the later stages begin) and run_steps (the run's length without
    --max-num-iterations)."""

    def budget(self, name: str) -> Mapping[str, Sourced]:
        """The settings of budget `name` (gpu or cpu)."""
        if name not in BUDGETS:
            raise ValueError(f"unknown recipe budget {name!r}: use {' or '.join(BUDGETS)}")
        return self.budgets[name]


# ------------------------------------------------------------------------------------------------ settings
_SD_CAMERAS = {
    "novel_fov": Sourced((35.0, 45.0), f"{TS_DREAMFUSION} fovy_range [40, 70]",
                         "a band of +-5 degrees around the reference camera's 40: a text prior has no camera input, "
                         "and views framed like the photo keep the object's scale on screen near the photo's"),
    "novel_radius": Sourced((2.2, 2.8), f"{TS_DREAMFUSION} camera_distance_range [1.5, 2.0]",
                            "scaled to our reference distance 2.5 (+-12 %); threestudio's scene radius differs"),
    "initial_azimuth_half_width": Sourced(45.0, f"{STABLE_DREAMFUSION} --progressive_view",
                                          "a window of +-45 degrees around the photo's azimuth that widens to the "
                                          "full circle (ours): the back is shaped after the sides agree with the photo"),
    "widen_end": Sourced(0.2, f"{REALFUSION} nerf/trainer.py (albedo-only warm-up: 1000 of 5000 iterations)",
                         "the window is full by a fifth of the run, when shading begins (stable-dreamfusion widens "
                         "over its first 40 %)"),
    "background": Sourced("random", f"{REALFUSION} nerf/trainer.py (random background per pixel); "
                                    f"{STABLE_DREAMFUSION} (random colour in image+text mode)"),
    "shading_start": Sourced(0.2, f"{REALFUSION} nerf/trainer.py (albedo only for 1000 of 5000 iterations)"),
}

_ZERO123_CAMERAS = {
    "novel_fov": Sourced(REFERENCE_CAMERA, f"{TS_ZERO123} fovy_range [20, 20] ('# Zero123 has fixed fovy', the "
                                           "reference camera's default_fovy_deg)"),
    "novel_radius": Sourced(REFERENCE_CAMERA, f"{TS_ZERO123} camera_distance_range [3.8, 3.8] (the reference "
                                              "camera's default_camera_distance)"),
    "initial_azimuth_half_width": Sourced(180.0, f"{TS_ZERO123} azimuth_range [-180, 180], progressive_until 0"),
    "widen_end": Sourced(0.0, f"{TS_ZERO123} progressive_until 0 (the full circle from the first step)"),
    "background": Sourced("white", f"{TS_SOLID_BACKGROUND} color (1, 1, 1); Zero123 was trained on white"),
    "shading_start": Sourced(1.0, f"{TS_ZERO123} ambient_only_steps 100000 (beyond max_steps 600: albedo only)"),
}

_MAGIC123_CAMERAS = {
    "novel_fov": Sourced(REFERENCE_CAMERA, f"{TS_MAGIC123_COARSE} fovy_range [40, 40] = default_fovy_deg 40"),
    "novel_radius": Sourced(REFERENCE_CAMERA, f"{TS_MAGIC123_COARSE} camera_distance_range [2.5, 2.5] = "
                                              "default_camera_distance 2.5"),
    "initial_azimuth_half_width": Sourced(180.0, f"{TS_MAGIC123_COARSE} azimuth_range [-180, 180]"),
    "widen_end": Sourced(0.0, f"{TS_MAGIC123_COARSE} (no progressive view)"),
    "background": Sourced("white", f"{TS_MAGIC123_COARSE} solid-color-background (white)"),
    "shading_start": Sourced(1.0, f"{TS_MAGIC123_COARSE} material_type no-material (albedo only)"),
}

_ORACLE_SETTINGS = {
    **_SD_CAMERAS,
    "initial_azimuth_half_width": Sourced(180.0, "the oracle is exact at every camera: no curriculum needed"),
    "widen_end": Sourced(0.0, "the oracle is exact at every camera: no curriculum needed"),
    "background": Sourced("white", "OracleGuidanceConfig.background_color (1, 1, 1): the truth is composited on white"),
    "shading_start": Sourced(1.0, "the oracle renders the known object's albedo"),
}


# ------------------------------------------------------------------------------------------------ budgets
CPU_DEVIATION = "the CPU budget: one view a step at 64 px over a longer run"
"""Why the cpu budget differs from a reference that renders more views a step, or larger ones."""


def _budget(views, resolution, starts, run_steps, source: str, schedule: str, length: str, deviation: str = "",
            length_deviation: str = "") -> Dict[str, Sourced]:
    """One budget: `schedule` names where the views and sizes come from (`deviation`: where ours differ), `length`
    where the run length does (`length_deviation`)."""
    return {"views_per_step": Sourced(tuple(views), f"{source} {schedule}", deviation),
            "novel_resolution": Sourced(tuple(resolution), f"{source} {schedule}", deviation),
            "stage_starts": Sourced(tuple(starts), f"{source} {schedule}", deviation),
            "run_steps": Sourced(run_steps, f"{source} {length}", length_deviation)}


def _zero123_budgets(config: str, views) -> Dict[str, Mapping[str, Sourced]]:
    """threestudio's Zero123-family schedule (`views` a step at 64, 128, 256 px from steps 0, 200, 300 of 600) on a
    GPU; one view at 64 px over 5000 steps on a CPU."""
    schedule = (f"random_camera batch_size [{', '.join(map(str, views))}], height [64, 128, 256], "
                "resolution_milestones [200, 300] of max_steps 600")
    return {GPU_BUDGET: _frozen(_budget(views, (64, 128, 256), (200 / 600, 300 / 600), 600, config, schedule,
                                        "trainer.max_steps 600")),
            CPU_BUDGET: _frozen(_budget((1,), (64,), (), 5000, config, schedule, "trainer.max_steps 600",
                                        CPU_DEVIATION, f"{CPU_DEVIATION} (5000 steps: about the GPU recipe's 3400 "
                                        "views at one a step, and the coarse default before the budgets)"))}


_SD_BUDGET = _frozen(_budget((1,), (64,), (), 5000, TS_DREAMFUSION, "data batch_size 1, height 64",
                             f"(run length) {REALFUSION} nerf/trainer.py 5000 iterations",
                             length_deviation="5000 steps as RealFusion (threestudio's dreamfusion-sd: 10000)"))
_SD_BUDGETS = {GPU_BUDGET: _SD_BUDGET, CPU_BUDGET: _SD_BUDGET}
_MAGIC123_SCHEDULE = "random_camera batch_size 1, height 128"
_MAGIC123_BUDGETS = {
    GPU_BUDGET: _frozen(_budget((1,), (128,), (), 10000, TS_MAGIC123_COARSE, _MAGIC123_SCHEDULE,
                                "trainer.max_steps 10000")),
    CPU_BUDGET: _frozen(_budget((1,), (128,), (), 5000, TS_MAGIC123_COARSE, _MAGIC123_SCHEDULE,
                                "trainer.max_steps 10000", length_deviation="the CPU budget: half the reference's "
                                                                            "steps")),
}


def _refine_budgets(config: str) -> Dict[str, Mapping[str, Sourced]]:
    """The refine stage's run length (its views and size are the refine datamanager's): `config`'s on a GPU,
    2000 steps on a CPU."""
    return {GPU_BUDGET: _frozen({"run_steps": Sourced(10000, f"{config} trainer.max_steps 10000")}),
            CPU_BUDGET: _frozen({"run_steps": Sourced(2000, f"{config} trainer.max_steps 10000",
                                                      "the CPU budget: a fifth of the reference's steps")})}


_REFINE_BUDGETS = _refine_budgets(TS_MAGIC123_REFINE)


# ------------------------------------------------------------------------------------------------ guidance
def _fixed_t(t_range, source: str) -> Dict[str, Sourced]:
    """A fixed timestep range (no annealing)."""
    return {"t_range": Sourced(t_range, source), "t_range_end": Sourced(t_range, source),
            "anneal": Sourced("none", source), "anneal_start": Sourced(0.0, source), "anneal_end": Sourced(1.0, source)}


_SD_GUIDANCE = {
    "weight": Sourced(1.0, f"{STABLE_DREAMFUSION} (image+text: lambda_guidance 1 against rgb 1000)"),
    "guidance_scale": Sourced(100.0, f"{TS_DREAMFUSION} guidance_scale 100; {REALFUSION} nerf/options.py 100"),
    "t_range": Sourced((0.02, 0.98), f"{REALFUSION} sd/sd.py U(0.02, 0.98)"),
    "t_range_end": Sourced((0.02, 0.5), f"{TS_PROLIFICDREAMER} max_step_percent 0.98 -> 0.5"),
    "anneal": Sourced("linear", f"{TS_PROLIFICDREAMER} (a step at 5000 steps)",
                      "linear (HiFA's gradual decrease) rather than a step"),
    "anneal_start": Sourced(0.0, f"{TS_PROLIFICDREAMER}"),
    "anneal_end": Sourced(1.0, f"{TS_PROLIFICDREAMER} (0.5 by the end of its first stage)",
                          "over the whole run, so that a run of any length ends at t_max 0.5"),
}

_ZERO123_GUIDANCE = {
    "weight": Sourced(0.2, f"{TS_ZERO123} lambda_sds 0.1 against lambda_rgb 500 (x 1000 / 500)"),
    "guidance_scale": Sourced(3.0, f"{TS_ZERO123} guidance_scale 3.0"),
    "t_range": Sourced((0.4, 0.85), f"{TS_ZERO123} min/max_step_percent [0, 0.4, 0.2, 200], [0, 0.85, 0.5, 200]"),
    "t_range_end": Sourced((0.2, 0.5), f"{TS_ZERO123} min/max_step_percent [0, 0.4, 0.2, 200], [0, 0.85, 0.5, 200]"),
    "anneal": Sourced("linear", f"{TS_ZERO123} ([start, from, to, end] interpolates linearly)"),
    "anneal_start": Sourced(0.0, f"{TS_ZERO123} (from step 0)"),
    "anneal_end": Sourced(1.0 / 3.0, f"{TS_ZERO123} (by step 200 of max_steps 600)"),
}

_STABLE_ZERO123_GUIDANCE = {
    "weight": Sourced(0.1, f"{TS_STABLE_ZERO123} lambda_sds 0.1 against lambda_rgb [100, 500, 1000, 400]",
                      "the ratio at lambda_rgb 1000 (from step 400 of 600), without the ramp"),
    "guidance_scale": Sourced(3.0, f"{TS_STABLE_ZERO123} guidance_scale 3.0"),
    "t_range": Sourced((0.7, 0.98), f"{TS_STABLE_ZERO123} min/max_step_percent [50, 0.7, 0.3, 200], "
                                    "[50, 0.98, 0.8, 200]"),
    "t_range_end": Sourced((0.3, 0.8), f"{TS_STABLE_ZERO123} min/max_step_percent [50, 0.7, 0.3, 200], "
                                       "[50, 0.98, 0.8, 200]"),
    "anneal": Sourced("linear", f"{TS_STABLE_ZERO123}"),
    "anneal_start": Sourced(50.0 / 600.0, f"{TS_STABLE_ZERO123} (from step 50 of max_steps 600)"),
    "anneal_end": Sourced(200.0 / 600.0, f"{TS_STABLE_ZERO123} (to step 200 of max_steps 600)"),
}


def _magic123_sd(config: str) -> Dict[str, Sourced]:
    """Magic123's 2D prior as threestudio's `config` sets it (the coarse and refine stages agree)."""
    return {"weight": Sourced(0.025, f"{config} lambda_sd 0.025 against lambda_rgb 1000"),
            "guidance_scale": Sourced(100.0, f"{config} guidance.guidance_scale 100"),
            **_fixed_t((0.2, 0.6), f"{config} min/max_step_percent 0.2, 0.6")}


def _magic123_zero123(config: str) -> Dict[str, Sourced]:
    """Magic123's 3D prior as threestudio's `config` sets it (the coarse and refine stages agree)."""
    return {"weight": Sourced(1.0, f"{config} lambda_3d_sd 1 against lambda_rgb 1000"),
            "guidance_scale": Sourced(5.0, f"{config} guidance_3d.guidance_scale 5"),
            **_fixed_t((0.2, 0.6), f"{config} min/max_step_percent 0.2, 0.6")}


_MAGIC123_SD = _magic123_sd(TS_MAGIC123_COARSE)
_MAGIC123_ZERO123 = _magic123_zero123(TS_MAGIC123_COARSE)
_MAGIC123_REFINE_SD = _magic123_sd(TS_MAGIC123_REFINE)
_MAGIC123_REFINE_ZERO123 = _magic123_zero123(TS_MAGIC123_REFINE)

_JOINT = {"weight": Sourced(1.0, f"{TS_MAGIC123_COARSE} (each prior's own lambda against lambda_rgb 1000 = ours)")}
_UNIT = {"weight": Sourced(1.0, "no prior of its own: the loss as it is")}

_UNGUIDED_REFINE_BUDGETS = {budget: _frozen({"run_steps": Sourced(2000, "no prior of its own: the refine stage's "
                                                                       "default length")}) for budget in BUDGETS}

COARSE_RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "none": Recipe("none", _frozen({**_SD_CAMERAS}), _frozen(_UNIT), budgets=_frozen(_SD_BUDGETS)),
    "oracle": Recipe("oracle", _frozen(_ORACLE_SETTINGS), _frozen(_UNIT), budgets=_frozen(_SD_BUDGETS)),
    "stable-diffusion": Recipe("stable-diffusion", _frozen(_SD_CAMERAS), _frozen(_SD_GUIDANCE),
                               budgets=_frozen(_SD_BUDGETS)),
    "zero123": Recipe("zero123", _frozen(_ZERO123_CAMERAS), _frozen(_ZERO123_GUIDANCE),
                      budgets=_frozen(_zero123_budgets(TS_ZERO123, (12, 4, 2)))),
    "stable-zero123": Recipe("stable-zero123", _frozen({**_ZERO123_CAMERAS, **{
        key: Sourced(value.value, value.source.replace(TS_ZERO123, TS_STABLE_ZERO123), value.deviation)
        for key, value in _ZERO123_CAMERAS.items()}}), _frozen(_STABLE_ZERO123_GUIDANCE),
                             budgets=_frozen(_zero123_budgets(TS_STABLE_ZERO123, (12, 8, 4)))),
    "magic123": Recipe("magic123", _frozen(_MAGIC123_CAMERAS), _frozen(_JOINT),
                       MappingProxyType({"stable_diffusion": _frozen(_MAGIC123_SD),
                                         "zero123": _frozen(_MAGIC123_ZERO123)}), _frozen(_MAGIC123_BUDGETS)),
})
"""The coarse stage's recipe of each prior."""


def _refine(coarse: str, guidance: Mapping[str, Sourced], parts: Optional[Mapping] = None,
            budgets: Optional[Mapping] = None) -> Recipe:
    """A refine recipe: the coarse recipe's cameras and background, `guidance` and `parts`, the refine budgets."""
    recipe = COARSE_RECIPES[coarse]
    return Recipe(coarse, recipe.settings, guidance, MappingProxyType(parts or {}),
                  _frozen(budgets or _REFINE_BUDGETS))


REFINE_RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "none": _refine("none", COARSE_RECIPES["none"].guidance, budgets=_UNGUIDED_REFINE_BUDGETS),
    "oracle": _refine("oracle", COARSE_RECIPES["oracle"].guidance, budgets=_UNGUIDED_REFINE_BUDGETS),
    "stable-diffusion": _refine("stable-diffusion", _frozen(_MAGIC123_REFINE_SD)),
    "zero123": _refine("zero123", _frozen(_MAGIC123_REFINE_ZERO123)),
    "stable-zero123": _refine("stable-zero123", _frozen(_MAGIC123_REFINE_ZERO123)),
    "magic123": _refine("magic123", _frozen(_JOINT), {"stable_diffusion": _frozen(_MAGIC123_REFINE_SD),
                                                      "zero123": _frozen(_MAGIC123_REFINE_ZERO123)}),
})
"""The refine stage's recipe of each prior: the coarse recipe's cameras and background, the guidance of
threestudio's Magic123 refine stage (each prior's part of it; Stable Diffusion at scale 100 and a small weight) and
its run length on a GPU."""


def recipe_for(config, stage: str = "coarse") -> Recipe:
    """The recipe of a guidance config (its `recipe_name()`) for `stage` ("coarse" or "refine")."""
    recipes = REFINE_RECIPES if stage == "refine" else COARSE_RECIPES
    return recipes[config.recipe_name()]


def apply(config, recipe: Recipe, values: Optional[Mapping[str, Sourced]] = None) -> Dict[str, Any]:
    """Fill the unset (None) fields of a guidance config from `recipe` (its `guidance` part, or `values`), and its
    joint parts from `recipe.parts`; returns {field path: value} of what was filled."""
    filled: Dict[str, Any] = {}
    for name, sourced in (recipe.guidance if values is None else values).items():
        if hasattr(config, name) and getattr(config, name) is None:
            setattr(config, name, sourced.value)
            filled[name] = sourced.value
    if values is None:
        for part, part_values in recipe.parts.items():
            sub = getattr(config, part, None)
            if sub is not None:
                filled.update({f"{part}.{key}": value for key, value in apply(sub, recipe, part_values).items()})
    return filled
