"""A run loads where its checkpoint can run: one trained on CUDA loads on the CPU, one whose field is tiny-cuda-nn's
is refused with one line where tiny-cuda-nn cannot run (never loaded silently with a random field)."""

import shutil
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch
import torch.serialization
import yaml

from single_image_nerf.errors import UserInputError
from single_image_nerf import runs

from tiny_training import tiny_config, train, write_ball_image

TCNN_KEYS = ("_model.field.encoding.tcnn_encoding.params", "_model.field.mlp.tcnn_encoding.params")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("portability")
    config = tiny_config(write_ball_image(root / "disc.png", size=32), root / "outputs", steps=2, rays=128)
    config.steps_per_save = 2
    train(config)
    return config.get_base_dir() / "config.yml"


def copy_run(config_path: Path, output_dir: Path, edit_config: Callable = lambda config: None,
             edit_checkpoint: Callable[[Dict], Dict] = lambda state: state, cuda_tags: bool = False) -> Path:
    """A copy of a run under another output folder (its config.yml pointing at its own checkpoints), with the
    config and the latest checkpoint edited; `cuda_tags` saves every tensor as if it lived on cuda:0."""
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    source = config.get_base_dir()
    config.output_dir = output_dir
    shutil.copytree(source, config.get_base_dir())
    edit_config(config)
    (config.get_base_dir() / "config.yml").write_text(yaml.dump(config))
    checkpoint = sorted(config.get_checkpoint_dir().glob("step-*.ckpt"))[-1]
    state = edit_checkpoint(torch.load(checkpoint, map_location="cpu"))
    location_tag = torch.serialization.location_tag
    if cuda_tags:
        torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(state, checkpoint)
    finally:
        torch.serialization.location_tag = location_tag
    return config.get_base_dir() / "config.yml"


def as_tcnn(state: Dict) -> Dict:
    """The checkpoint as tiny-cuda-nn writes the field: one flat `params` vector for the grid and one for the MLP,
    in place of the hash table and the linear layers."""
    pipeline = state["pipeline"]
    grid = [key for key in pipeline if key.endswith("field.encoding.hash_table")]
    mlp = [key for key in pipeline if ".field.mlp.layers." in key]
    assert len(grid) == 1 and mlp
    pipeline[TCNN_KEYS[0]] = pipeline.pop(grid[0]).reshape(-1).half()
    pipeline[TCNN_KEYS[1]] = torch.cat([pipeline.pop(key).reshape(-1) for key in mlp]).half()
    return state


def probe_density(pipeline) -> torch.Tensor:
    points = torch.linspace(-0.6, 0.6, 27).reshape(9, 3)
    with torch.no_grad():
        return pipeline.model.field.density_at(points.to(pipeline.device)).cpu()


def test_a_run_trained_on_cuda_loads_on_the_cpu(run, tmp_path):
    cuda_run = copy_run(run, tmp_path / "outputs", cuda_tags=True)
    checkpoint = sorted(cuda_run.parent.glob("nerfstudio_models/step-*.ckpt"))[-1]
    if not torch.cuda.is_available():  # the copy really is a CUDA checkpoint: torch alone will not map it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(checkpoint)
    _, pipeline = runs.load_pipeline(cuda_run)
    _, original = runs.load_pipeline(run)
    assert torch.equal(probe_density(pipeline), probe_density(original))
    assert probe_density(original).max() > 0


def test_the_field_is_built_with_the_backend_its_checkpoint_holds(run, tmp_path):
    def say_tcnn(config):
        config.pipeline.model.implementation = "tcnn"  # the default, written by runs trained without tiny-cuda-nn

    tcnn_config = copy_run(run, tmp_path / "outputs", edit_config=say_tcnn)
    assert runs.checkpoint_backend(runs.latest_checkpoint(tcnn_config)) == "torch"
    config, pipeline, _, _ = runs.checked_eval_setup(tcnn_config)
    assert config.pipeline.model.implementation == "torch" and not pipeline.model.field.uses_tcnn()


def test_a_tcnn_checkpoint_is_refused_with_one_line_where_tcnn_cannot_run(run, tmp_path):
    tcnn_run = copy_run(run, tmp_path / "outputs", edit_checkpoint=as_tcnn)
    assert runs.checkpoint_backend(runs.latest_checkpoint(tcnn_run)) == "tcnn"
    with pytest.raises(UserInputError) as refused:
        runs.load_pipeline(tcnn_run)
    message = str(refused.value)
    assert "\n" not in message and "trained with tiny-cuda-nn" in message
    assert "needs CUDA and tiny-cuda-nn" in message and "--pipeline.model.implementation torch" in message

    # Loaded by any other route (a refine stage's coarse run, nerfstudio's own commands), the field refuses it too,
    # rather than nerfstudio's non-strict fallback leaving the field at its random initialisation.
    _, pipeline = runs.load_pipeline(run)
    before = probe_density(pipeline)
    state = torch.load(sorted(tcnn_run.parent.glob("nerfstudio_models/step-*.ckpt"))[-1], map_location="cpu")
    with pytest.raises(UserInputError, match="trained with tiny-cuda-nn"):
        pipeline.load_pipeline(state["pipeline"], state["step"])
    assert torch.equal(probe_density(pipeline), before)
