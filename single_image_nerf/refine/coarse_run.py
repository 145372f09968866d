"""Reading and loading a coarse (`single-image-nerf`) run: its config.yml and its latest checkpoint, with one-line
errors for anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from single_image_nerf.errors import UserInputError
from single_image_nerf.runs import COARSE_METHOD, checkpoint_mismatch


def read_coarse_config(path: Optional[Path]):
    """The TrainerConfig stored in a coarse run's config.yml. Raises a one-line UserInputError when `path` is
    missing, is not a nerfstudio config.yml, or is a run of another method."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    from single_image_nerf.models.coarse_model import CoarseModelConfig

    hint = f"pass the config.yml of a {COARSE_METHOD} run (outputs/<name>/{COARSE_METHOD}/<time>/config.yml)"
    if path is None:
        raise UserInputError(f"the refine stage starts from a coarse run: --pipeline.model.coarse-config is required; "
                             f"{hint}")
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"coarse config {path} {'is a folder' if path.is_dir() else 'does not exist'}; {hint}")
    try:
        config = yaml.load(path.read_text(), Loader=yaml.Loader)
    except Exception as error:  # not YAML, or YAML naming classes that do not exist here
        first = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise UserInputError(f"coarse config {path} is not a nerfstudio config.yml ({first}); {hint}") from None
    if not isinstance(config, TrainerConfig):
        raise UserInputError(f"coarse config {path} is not a nerfstudio config.yml; {hint}")
    model = getattr(getattr(config, "pipeline", None), "model", None)
    if config.method_name != COARSE_METHOD or not isinstance(model, CoarseModelConfig):
        raise UserInputError(f"coarse config {path} is a run of {config.method_name!r}, not of {COARSE_METHOD!r}; "
                             f"{hint}")
    return config


def latest_checkpoint(config_path: Path, config) -> Path:
    """The newest step-*.ckpt of the run whose config.yml is `config_path` (found beside it, wherever the run was
    moved). Raises a one-line UserInputError when there is none."""
    from single_image_nerf.inputs import checkpoint_steps

    folder = Path(config_path).parent / config.relative_model_dir
    steps = checkpoint_steps(folder) if folder.is_dir() else []
    if not steps:
        raise UserInputError(f"coarse run {Path(config_path).parent} has no checkpoint (no step-*.ckpt in {folder})")
    return folder / f"step-{steps[-1]:09d}.ckpt"


def load_coarse_pipeline(config_path: Optional[Path], device: torch.device | str, data: Optional[Path] = None):
    """The coarse run's pipeline on `device`, in inference mode (no guidance, no dataset in memory) and in eval mode,
    with its latest checkpoint loaded, as nerfstudio's `eval_setup` does. `data` replaces the run's data path."""
    config = read_coarse_config(config_path)
    checkpoint = latest_checkpoint(config_path, config)
    if data is not None:
        config.pipeline.datamanager.data = Path(data)
    pipeline = config.pipeline.setup(device=device, test_mode="inference")
    state = torch.load(checkpoint, map_location=device)
    try:
        pipeline.load_pipeline(state["pipeline"], state["step"])
    except RuntimeError as error:  # load_state_dict: missing, unexpected or reshaped parameters
        raise checkpoint_mismatch(config_path, error) from None
    pipeline.eval()
    return pipeline
