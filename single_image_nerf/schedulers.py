"""Learning-rate schedules whose state holds plain Python floats.

nerfstudio's ExponentialDecayScheduler computes its factor with NumPy, so optimiser and scheduler states in a
checkpoint carry `numpy.float64`; torch >= 2.6 loads checkpoints with `weights_only=True` and refuses them, which
breaks resuming, `ns-export` and `ns-viewer`. These schedules keep every number a Python float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with warm-up, with checkpoints that load under `weights_only=True`."""

    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)
    max_steps: Optional[int] = None
    """Steps of the decay to lr_final (None: the whole run, --max-num-iterations, set when training starts)."""


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """Same schedule as the parent; every factor and learning rate stored as a Python float."""

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        if self.config.max_steps is None:
            raise ValueError("the learning-rate decay has no length: the trainer sets max_steps from "
                             "--max-num-iterations before it builds the optimisers")
        scheduler = super().get_scheduler(optimizer, lr_init)
        assert isinstance(scheduler, lr_scheduler.LambdaLR)
        scheduler.lr_lambdas = [lambda step, factor=factor: float(factor(step)) for factor in scheduler.lr_lambdas]
        scheduler.base_lrs = [float(lr) for lr in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["lr"] = float(group["lr"])
            if "initial_lr" in group:
                group["initial_lr"] = float(group["initial_lr"])
        scheduler._last_lr = [float(lr) for lr in scheduler._last_lr]  # pylint: disable=protected-access
        return scheduler
