"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture()
def offline_hub(monkeypatch):
    """No Hugging Face hub requests (the tiny models are loaded from local folders), and one torch thread."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
