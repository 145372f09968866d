"""Every schedule is a fraction of the run (`--max-num-iterations`), never a fixed step count: the step a fraction names.

The trainer gives the pipeline the run's length when it starts; a part built outside a training run (a test, a
benchmark) assumes the coarse stage's default length."""

from __future__ import annotations

DEFAULT_RUN_STEPS = 5000
"""The coarse stage's default length (`ns-train single-image-nerf`), assumed outside a training run."""
DEFAULT_REFINE_STEPS = 2000
"""The refine stage's default length (`ns-train single-image-refine`)."""


def step_at(fraction: float, run_steps: int) -> int:
    """The step `fraction` of a run of `run_steps` names (rounded to the nearest step)."""
    return int(round(fraction * run_steps))


def stage_index(step: int, stage_starts, run_steps: int) -> int:
    """Which stage of a run `step` lies in: 0 before the first of `stage_starts` (fractions of the run, increasing),
    1 from it on, and so on."""
    return sum(step >= step_at(start, run_steps) for start in stage_starts)


def stage_value(values, index: int):
    """The value of stage `index` from one value per stage, or one value (a number or a 1-tuple) for every stage."""
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    return values[0] if len(values) == 1 else values[index]
