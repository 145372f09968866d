"""nerfstudio's Trainer with checkpoints that survive a kill and resumes that finish at the configured step."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from single_image_nerf.cpu_allocator import keep_freed_memory
from single_image_nerf.errors import UserInputError
from single_image_nerf.inputs import checkpoint_steps


@dataclass
class SingleImageTrainerConfig(TrainerConfig):
    """TrainerConfig whose `max_num_iterations` is the total step count, also when resuming with --load-dir."""

    _target: Type = field(default_factory=lambda: SingleImageTrainer)
    max_num_iterations: Optional[int] = None  # type: ignore[assignment]
    """Steps of the whole run (None: the prior's recipe for the device: 600 for zero123 on CUDA; see
    docs/guidance.md)."""

    def set_experiment_name(self) -> None:
        """As nerfstudio does, except that a pipeline config that knows a better name (the refine stage's, whose data
        comes from the coarse run) names the experiment."""
        if self.experiment_name is None and hasattr(self.pipeline, "experiment_name"):
            self.experiment_name = self.pipeline.experiment_name()
        super().set_experiment_name()


    def resolve(self) -> None:
        """Fill what the prior and the run's length decide: every option left unset from the prior's recipe and its
        budget for this device (guidance/recipes.py), the run's length when --max-num-iterations is unset (the
        recipe's), the pipeline's run length (every schedule is a fraction of it) and a learning-rate decay without a
        length (the whole run). Idempotent; a user's explicit option is never changed."""
        pipeline = self.pipeline
        if hasattr(pipeline, "resolve"):
            pipeline.resolve(self.machine.device_type)
        if self.max_num_iterations is None:
            if not hasattr(pipeline, "recipe_run_steps"):
                raise UserInputError("--max-num-iterations is unset and the pipeline has no recipe to take it from")
            self.max_num_iterations = pipeline.recipe_run_steps(self.machine.device_type)
        if hasattr(pipeline, "run_steps"):
            pipeline.run_steps = self.max_num_iterations
        for group in self.optimizers.values():
            scheduler = group.get("scheduler") if isinstance(group, dict) else None
            if scheduler is not None and hasattr(scheduler, "max_steps") and scheduler.max_steps is None:
                scheduler.max_steps = self.max_num_iterations

    def save_config(self) -> None:
        """As nerfstudio does (ns-train calls it before anything else), with the options the recipe and the run's
        length decide filled in (so config.yml holds what the run uses), after checking every input the run will read
        (single_image_nerf/inputs.py), and with one line when the run folder cannot be written."""
        from single_image_nerf.inputs import check_training_config

        self.set_experiment_name()  # from the options as given, before the resolution fills any
        self.resolve()
        check_training_config(self)
        try:
            super().save_config()
        except OSError as error:
            raise UserInputError(f"cannot write the run folder {self.get_base_dir()}: "
                                 f"{error.strerror or error} (choose another --output-dir)") from None

    def get_checkpoint_dir(self) -> Path:
        """As nerfstudio does, after checking what is in the folder: nerfstudio's eval_setup (ns-viewer, ns-export)
        and the project's commands ask for it before they read the latest checkpoint, so a checkpoint cut short or a
        stray file there ends in one line instead of a torch.load traceback."""
        from single_image_nerf.inputs import check_checkpoint_folder

        folder = super().get_checkpoint_dir()
        check_checkpoint_folder(folder)
        return folder


class GuardedOptimizers(Optimizers):
    """Optimizers that skip a step whose gradients are not all finite (or that the pipeline marked as skipped):
    a NaN gradient from a finite loss would otherwise write NaN into every weight.

    The check reads the parameters the optimisers hold now (gsplat's densification replaces the Parameter objects
    in the model and in the optimisers; the lists given at set-up go stale) and waits on the device once per step.
    A skipped step leaves every parameter and optimiser state as it was, and tells the model (`discard_step`) so
    that a densification strategy does not count the step's renders either."""

    pipeline: object = None

    def optimizer_scaler_step_some(self, grad_scaler, param_groups) -> None:
        if self._skip(param_groups):
            return
        super().optimizer_scaler_step_some(grad_scaler, param_groups)

    def optimizer_scaler_step_all(self, grad_scaler) -> None:
        if self._skip(list(self.optimizers)):
            return
        super().optimizer_scaler_step_all(grad_scaler)

    def current_parameters(self, group: str) -> list:
        """The parameters the optimiser of `group` updates now."""
        return [p for param_group in self.optimizers[group].param_groups for p in param_group["params"]]

    def _skip(self, param_groups) -> bool:
        for group in param_groups:  # nerfstudio's gradient clipping reads these lists: keep them current
            self.parameters[group] = self.current_parameters(group)
        pipeline = self.pipeline
        flag = getattr(pipeline, "skip_optimizer_step", False)  # a bool, or the pipeline's device flag
        if not isinstance(flag, torch.Tensor) and flag:
            pipeline.skip_optimizer_step = False  # the pipeline already warned (non-finite loss)
            self._discard_step()
            return True
        graded = [(group, p.grad) for group in param_groups for p in self.parameters[group] if p.grad is not None]
        checks = [torch.isfinite(grad).all() for _, grad in graded]
        if isinstance(flag, torch.Tensor):
            checks.append(~flag.reshape(()))
        if not checks:
            return False
        finite = torch.stack(checks).tolist()  # the step's one wait on the device
        if isinstance(flag, torch.Tensor) and not finite[-1]:
            pipeline.skip_optimizer_step = False  # the pipeline counts the step and names the non-finite losses
            self._discard_step()
            return True
        bad = sorted({group for (group, _), ok in zip(graded, finite) if not ok})
        if not bad:
            return False
        if pipeline is not None and hasattr(pipeline, "skipped_steps"):
            pipeline.skipped_steps += 1
        CONSOLE.print(f"[bold yellow]non-finite gradients in {', '.join(bad)}; this step is skipped")
        self._discard_step()
        return True

    def _discard_step(self) -> None:
        """Drop the step's gradients and tell the model, which may keep statistics of the step (see the class)."""
        self.zero_grad_all()
        model = getattr(self.pipeline, "model", None)
        if hasattr(model, "discard_step"):
            model.discard_step()


class SingleImageTrainer(Trainer):
    """Writes each checkpoint to a temporary file and renames it into place, so a run killed at any moment leaves
    its last complete checkpoint; after loading one, trains only up to `max_num_iterations` in total."""

    config: SingleImageTrainerConfig

    def setup_optimizers(self) -> Optimizers:
        optimizers = GuardedOptimizers(self.config.optimizers.copy(), self.pipeline.get_param_groups())
        optimizers.pipeline = self.pipeline
        return optimizers

    def setup(self, test_mode="val") -> None:
        self.config.resolve()  # a run started without save_config (a script) resolves here
        total = self.config.max_num_iterations
        if str(self.device).startswith("cpu"):
            keep_freed_memory()  # later steps reuse the first steps' pages instead of faulting in fresh ones
        super().setup(test_mode=test_mode)
        # nerfstudio sized its progress log by the steps left after a resume; count toward the run's total instead,
        # and give the final log a step even when a resumed run has nothing left to train.
        writer.GLOBAL_BUFFER["max_iter"] = total
        writer.GLOBAL_BUFFER.setdefault("step", max(self._start_step - 1, 0))
        stage = "refine" if hasattr(self.pipeline.model, "gauss_params") else "coarse"
        progress = (f" (step, time per step and ETA are printed every {self.config.logging.steps_per_log} steps)"
                    if self.config.logging.local_writer.enable else "")
        CONSOLE.print(f"[bold]{self.config.method_name}: {stage} stage, training to step {total}[/bold]{progress}")
        if hasattr(self.pipeline.config, "recipe_summary"):
            CONSOLE.print(self.pipeline.config.recipe_summary(), soft_wrap=True, highlight=False)
        self.viewer_panel = None
        viewer = self.viewer_state
        if viewer is not None and hasattr(viewer, "viser_server") and hasattr(viewer, "_trigger_rerender"):
            from single_image_nerf.viewer import TrainingViewerPanel  # only with nerfstudio's (viser) viewer

            self.viewer_panel = TrainingViewerPanel(viewer.viser_server, self.pipeline, total_steps=total,
                                                    rerender=viewer._trigger_rerender,  # pylint: disable=protected-access
                                                    show_step=getattr(viewer, "update_step", None))
            self.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                                   self.viewer_panel.update, update_every_num_iters=1))

    def _init_viewer_state(self) -> None:
        super()._init_viewer_state()
        if getattr(self, "viewer_panel", None) is not None:
            self.viewer_panel.adopt_training_cameras(self.viewer_state)

    def _load_checkpoint(self) -> None:
        load_dir = self.config.load_dir
        if load_dir is not None:
            if not Path(load_dir).is_dir():
                raise UserInputError(f"--load-dir {load_dir} is not a folder; pass the run's nerfstudio_models folder")
            steps = checkpoint_steps(Path(load_dir))
            if not steps:
                raise UserInputError(f"--load-dir {load_dir} holds no step-*.ckpt checkpoint; pass the run's "
                                     "nerfstudio_models folder")
            if self.config.load_step is None:
                self.config.load_step = steps[-1]
            elif self.config.load_step not in steps:
                raise UserInputError(f"--load-step {self.config.load_step} is not in {load_dir}; it has steps "
                                     f"{', '.join(map(str, steps))}")
        elif self.config.load_checkpoint is not None and not Path(self.config.load_checkpoint).is_file():
            raise UserInputError(f"--load-checkpoint {self.config.load_checkpoint} does not exist")
        self._check_checkpoint_file()
        try:
            super()._load_checkpoint()
        except (RuntimeError, EOFError, KeyError, IndexError, pickle.UnpicklingError) as error:  # a foreign file
            raise UserInputError(f"cannot load the checkpoint ({str(error).splitlines()[0][:160]}); pass a "
                                 "checkpoint written by single-image-nerf with the same model settings") from None
        if self._start_step > 0:
            total = self.config.max_num_iterations
            remaining = max(total - self._start_step, 0)
            CONSOLE.print(f"Resuming at step {self._start_step}; training to step {total} ({remaining} steps left).")
            self.config.max_num_iterations = remaining
            self.step = self._start_step - 1  # what the final save writes when nothing is left to train

    def _check_checkpoint_file(self) -> None:
        """One line for a checkpoint to resume from that is empty, cut short or not a checkpoint at all."""
        from single_image_nerf.inputs import check_checkpoint_file

        if self.config.load_dir is not None:
            check_checkpoint_file(Path(self.config.load_dir) / f"step-{self.config.load_step:09d}.ckpt")
        elif self.config.load_checkpoint is not None:
            check_checkpoint_file(Path(self.config.load_checkpoint))

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Save the model and optimizers atomically, then delete older checkpoints if only the latest is kept."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        # The partial file lives beside the folder, so a resume that lists the folder never sees it.
        partial = self.checkpoint_dir.parent / f".{ckpt_path.name}.partial"
        with open(partial, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != ckpt_path:
                    old.unlink()
