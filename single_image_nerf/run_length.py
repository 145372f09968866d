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
