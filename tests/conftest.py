"""Fixtures shared by several test modules."""

import pytest
import torch

from hub_client import hub_offline


@pytest.fixture()
def offline_hub(monkeypatch):
    """No Hugging Face hub requests (the tiny models are loaded from local folders), and one torch thread."""
    hub_offline(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
