"""Switching the Hugging Face hub client off inside a running test process."""

import pytest


def hub_offline(patch: pytest.MonkeyPatch) -> None:
    """Switch the hub client off for the rest of `patch`'s life: the environment variable for code that reads it
    later, and `huggingface_hub.constants.HF_HUB_OFFLINE`, which the client read once when it was imported and
    consults on every request (transformers and diffusers ask it through `huggingface_hub.is_offline_mode`)."""
    import huggingface_hub.constants

    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
