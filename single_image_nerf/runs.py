"""Loading a trained run (config.yml + checkpoint -> pipeline) for the refine stage and the commands, with one-line
errors for the usual mistakes.

A wrong path, a file that is not a nerfstudio config.yml, a run without checkpoints, or a run of a method the command
cannot use: each is refused before anything heavy is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Tuple

from single_image_nerf.errors import UserInputError

COARSE_METHOD = "single-image-nerf"
"""Method name of the coarse stage (written into every coarse run's config.yml)."""


def read_run_config(path: Path) -> Any:
    """The TrainerConfig stored in a run's config.yml (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no run config at {path}: pass the config.yml of a training run "
                             f"(outputs/<name>/<method>/<time>/config.yml)")
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    try:
        config = yaml.load(path.read_text(), Loader=yaml.Loader)
    except Exception as error:  # any YAML or unpickling failure means the same thing to the user
        raise UserInputError(f"{path} is not a readable nerfstudio config.yml ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    if not isinstance(config, TrainerConfig):
        raise UserInputError(f"{path} is not a nerfstudio run config (config.yml written by ns-train)")
    return config


def model_class(config: Any) -> type:
    """The model class a run config builds."""
    return config.pipeline.model._target


def is_coarse_run(config: Any) -> bool:
    """Whether the run's model is the coarse stage's density field (or a subclass of it)."""
    from single_image_nerf.models.coarse_model import CoarseModel

    target = model_class(config)
    return isinstance(target, type) and issubclass(target, CoarseModel)


def is_splat_run(config: Any) -> bool:
    """Whether the run's model is a SplatfactoModel (the refine stage, or splatfacto itself)."""
    try:
        from nerfstudio.models.splatfacto import SplatfactoModel
    except ImportError:
        return False
    target = model_class(config)
    return isinstance(target, type) and issubclass(target, SplatfactoModel)


def check_checkpoint(config: Any, path: Path) -> None:
    """Refuse a run whose checkpoint folder holds no checkpoint."""
    checkpoint_dir = config.get_checkpoint_dir()
    if not checkpoint_dir.is_dir() or not any(checkpoint_dir.glob("step-*.ckpt")):
        raise UserInputError(f"the run {path} has no checkpoint in {checkpoint_dir}: train it first "
                             f"(or point at the config.yml next to its nerfstudio_models folder)")


def check_stage_run(path: Path, config: Any, takes: str) -> None:
    """Refuse in one line a run that is neither the coarse stage's nor a Gaussian splatting run; `takes` says
    what the command takes."""
    if not (is_coarse_run(config) or is_splat_run(config)):
        name = getattr(config, "method_name", None) or model_class(config).__name__
        raise UserInputError(f"{path} is a {name} run: {takes}")


def load_pipeline(path: Path, config: Any = None) -> Tuple[Any, Any]:
    """(config, pipeline in eval mode) of a run, through nerfstudio's eval_setup in inference mode (no images,
    no guidance, no diffusion weights)."""
    config = config if config is not None else read_run_config(path)
    check_checkpoint(config, Path(path))
    _, pipeline, _, _ = checked_eval_setup(Path(path))
    return config, pipeline


def checked_eval_setup(path: Path) -> Tuple[Any, Any, Path, int]:
    """nerfstudio's eval_setup in inference mode, (config, pipeline, checkpoint path, step), with a one-line error
    when the checkpoint does not fit the model. Tensors are read onto the CPU first (nerfstudio's map_location), so a
    run trained on CUDA loads on a machine without one; the field is built with the backend its checkpoint holds
    (a pure-torch grid trained where tiny-cuda-nn was missing loads where it is installed), and a tiny-cuda-nn
    checkpoint where tiny-cuda-nn cannot run is refused with one line."""
    from nerfstudio.utils.eval_utils import eval_setup

    backend = checkpoint_backend(latest_checkpoint(Path(path)))
    if backend == "tcnn":
        check_tcnn_usable(path)

    def use_checkpoint_backend(config: Any) -> Any:
        model = config.pipeline.model
        if backend is not None and getattr(model, "implementation", None) not in (None, backend):
            model.implementation = backend
        return config

    try:
        return eval_setup(Path(path), test_mode="inference", update_config_callback=use_checkpoint_backend)
    except RuntimeError as error:  # load_state_dict: missing, unexpected or reshaped parameters
        raise checkpoint_mismatch(path, error) from None


def latest_checkpoint(path: Path) -> Optional[Path]:
    """The checkpoint nerfstudio's eval_setup loads for the run config at `path` (the highest step), if any."""
    try:
        checkpoint_dir = read_run_config(Path(path)).get_checkpoint_dir()
    except UserInputError:
        return None
    checkpoints = sorted(checkpoint_dir.glob("step-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def checkpoint_backend(checkpoint: Optional[Path]) -> Optional[Literal["tcnn", "torch"]]:
    """Whether a coarse checkpoint's hash grid and MLP are tiny-cuda-nn's flat parameter vectors or the pure-torch
    modules' tensors (None for another model or an unreadable file, which eval_setup then reports)."""
    if checkpoint is None:
        return None
    import torch

    from single_image_nerf.models.coarse_field import TCNN_PARAMETERS

    try:
        try:
            state = torch.load(checkpoint, map_location="cpu", mmap=True)  # reads the keys, not the tensors
        except RuntimeError:  # a file torch cannot map (the legacy format)
            state = torch.load(checkpoint, map_location="cpu")
        keys = list(state["pipeline"])
    except Exception:  # pylint: disable=broad-except
        return None
    if any(key.endswith("field." + name) for key in keys for name in TCNN_PARAMETERS):
        return "tcnn"
    if any(key.endswith("field.encoding.hash_table") for key in keys):
        return "torch"
    return None


def check_tcnn_usable(path: Path) -> None:
    """Refuse, with one line, to load a tiny-cuda-nn checkpoint where tiny-cuda-nn cannot run."""
    import torch
    from nerfstudio.utils.external import TCNN_EXISTS

    from single_image_nerf.models.coarse_field import TCNN_CHECKPOINT_ERROR

    missing = ("tiny-cuda-nn is not installed" if not TCNN_EXISTS
               else "no CUDA device is available" if not torch.cuda.is_available() else None)
    if missing is not None:
        raise UserInputError(f"cannot load the run {path} here ({missing}): {TCNN_CHECKPOINT_ERROR}")


def checkpoint_mismatch(path: Path, error: Exception) -> UserInputError:
    """The one-line error for a run whose checkpoint does not fit the model its config.yml builds."""
    return UserInputError(f"the checkpoint of {path} does not fit the model its config.yml describes "
                          f"({str(error).splitlines()[0][:160]}): it was written with other model settings or by "
                          "another version of single-image-nerf; train the run again with this version")


def check_output(path: Path, overwrite: bool, suffixes: Tuple[str, ...]) -> Path:
    """Validate an output file before any work: a known suffix, no silent overwrite, a writable folder."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserInputError(f"cannot write {path}: the output must end in one of {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise UserInputError(f"{path} already exists: pass --overwrite to replace it")
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not a file")
    check_writable_folder(path.parent)
    return path


def check_writable_folder(folder: Path) -> None:
    """Create `folder` if needed and refuse it with one line when it cannot be written."""
    folder = Path(folder) if str(folder) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"cannot create the output folder {folder}: {error.strerror or error}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write to the output folder {folder}: permission denied")
