"""RealFusion's textual inversion with a tiny random Stable Diffusion, offline: only the new token's row moves, the
token round-trips through disk, and the guidance picks it up from the data folder."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from single_image_nerf.guidance.base import GuidanceContext
from single_image_nerf.guidance.loading import load_stable_diffusion
from single_image_nerf.guidance.stable_diffusion import StableDiffusionGuidanceConfig
from single_image_nerf.guidance.textual_inversion import (
    TextualInversionConfig, add_token, augment_views, learn_token, load_token, save_token, textual_inversion,
)
from tiny_diffusion import tiny_stable_diffusion_folder

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("offline_hub")


def disc_rgba(size: int = 24) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = ((rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 3) ** 2).float()
    return torch.stack([0.9 * inside, 0.3 * inside, 0.2 + 0 * inside, inside], dim=-1)


def tiny_config(**options) -> TextualInversionConfig:
    base = dict(model_path=str(tiny_stable_diffusion_folder()), token="<cup>", initializer="photo", steps=3,
                batch_size=2, learning_rate=0.05, progress=False)
    return TextualInversionConfig(**{**base, **options})


def prompt_embedding(parts, text: str) -> torch.Tensor:
    ids = parts.tokenizer([text], padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return parts.text_encoder(ids)[0]


def test_augmented_views_are_varied_in_range_and_reproducible():
    config = tiny_config()
    rgba = disc_rgba()
    views = augment_views(rgba, 6, 16, config, torch.Generator().manual_seed(0))
    assert views.shape == (6, 3, 16, 16) and views.min() >= 0 and views.max() <= 1
    corners = views[:, :, 0, 0]  # background colours differ from view to view
    assert (corners[1:] - corners[:1]).abs().sum() > 0.1
    again = augment_views(rgba, 6, 16, config, torch.Generator().manual_seed(0))
    torch.testing.assert_close(views, again)


def test_learning_changes_only_the_new_token_row_and_round_trips(tmp_path):
    config = tiny_config()
    parts = load_stable_diffusion(config.model_path, CPU, torch.float32, "--model-path")
    before = parts.text_encoder.get_input_embeddings().weight.detach().clone()
    frozen = {name: p.detach().clone() for name, p in parts.unet.named_parameters()}
    initial = before[parts.tokenizer("photo", add_special_tokens=False).input_ids].mean(0)

    learned = learn_token(disc_rgba(), config, parts, CPU)

    after = parts.text_encoder.get_input_embeddings().weight.detach()
    token_id = parts.tokenizer.convert_tokens_to_ids("<cup>")
    assert token_id == before.shape[0] and after.shape[0] == before.shape[0] + 1
    torch.testing.assert_close(after[:-1], before)  # every old row is untouched
    torch.testing.assert_close(after[token_id], learned)
    assert not torch.allclose(learned, initial)  # the new row moved away from its initializer
    assert all(torch.equal(p, frozen[name]) for name, p in parts.unet.named_parameters())
    assert all(not p.requires_grad and p.grad is None for p in parts.text_encoder.parameters())
    expected = prompt_embedding(parts, "a photo of <cup>")

    path = save_token(tmp_path, "<cup>", learned, {"initializer": "photo"})
    token, embedding, meta = load_token(tmp_path)
    assert path.name == "token.bin" and token == "<cup>" and meta["initializer"] == "photo"
    torch.testing.assert_close(embedding, learned)
    assert set(torch.load(path, weights_only=True)) == {"<cup>"}  # diffusers' load_textual_inversion format

    fresh = load_stable_diffusion(config.model_path, CPU, torch.float32, "--model-path")
    add_token(fresh.tokenizer, fresh.text_encoder, token, embedding)
    torch.testing.assert_close(prompt_embedding(fresh, "a photo of <cup>"), expected)
    with pytest.raises(ValueError, match="another model"):
        add_token(fresh.tokenizer, fresh.text_encoder, "<other>", torch.zeros(7))


def test_guidance_uses_the_token_saved_beside_the_data(tmp_path):
    Image.fromarray((disc_rgba().numpy() * 255).astype(np.uint8)).save(tmp_path / "rgba.png")
    path = textual_inversion(tmp_path, tiny_config(steps=2), device=CPU)
    assert path == tmp_path / "token.bin" and (tmp_path / "token.json").is_file()
    _, learned, _ = load_token(path)

    config = StableDiffusionGuidanceConfig(model_path=str(tiny_stable_diffusion_folder()))
    guide = config.setup(context=GuidanceContext(device=CPU, caption="a red cup", data_dir=tmp_path))
    assert guide.prompt == "a photo of <cup>" and guide.prompts[0] == "a photo of <cup>, front view"
    fresh = load_stable_diffusion(config.model_path, CPU, torch.float32, "--model-path")
    add_token(fresh.tokenizer, fresh.text_encoder, "<cup>", learned)
    torch.testing.assert_close(guide.cond_embeddings[0:1], prompt_embedding(fresh, "a photo of <cup>, front view"))

    config.use_learned_token = False
    assert config.setup(context=GuidanceContext(device=CPU, caption="a red cup", data_dir=tmp_path)).prompt == \
        "a red cup"


def test_command_line_learns_and_saves(tmp_path, monkeypatch, capsys):
    Image.fromarray((disc_rgba().numpy() * 255).astype(np.uint8)).save(tmp_path / "cup.png")
    argv = ["textual_inversion.py", "--data", str(tmp_path / "cup.png"), "--output", str(tmp_path / "out"),
            "--model-path", str(tiny_stable_diffusion_folder()), "--steps", "1", "--batch-size", "1",
            "--token", "<cup>", "--initializer", "photo", "--no-progress", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "data_scripts" / "textual_inversion.py"), run_name="__main__")
    assert (tmp_path / "out" / "token.bin").is_file()
    assert "saved <cup>" in capsys.readouterr().out
    token, learned, _ = load_token(tmp_path / "out")
    parts = load_stable_diffusion(str(tiny_stable_diffusion_folder()), CPU, torch.float32, "--model-path")
    initial = parts.text_encoder.get_input_embeddings().weight[
        parts.tokenizer("photo", add_special_tokens=False).input_ids].mean(0)
    assert token == "<cup>" and learned.shape == initial.shape
    assert not torch.allclose(learned, initial)  # the one step moved the new token away from its initializer
