"""The `offline_hub` fixture (tests/conftest.py) really switches the hub client off, even when the client was imported
with downloads allowed: no request leaves the process, and a missing model fails at once."""

import time

import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled


@pytest.fixture()
def online_client(monkeypatch):
    """The hub client as a user's process has it: imported with downloads allowed."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_the_fixture_switches_off_a_client_imported_online(online_client, request, tmp_path):
    assert not huggingface_hub.is_offline_mode()
    request.getfixturevalue("offline_hub")  # set up after the client was imported, as in every test module
    assert huggingface_hub.is_offline_mode()
    with pytest.raises(OfflineModeIsEnabled):  # the client's session refuses any request
        huggingface_hub.get_session().get("https://huggingface.co/api/models/no-such-org/no-such-model")
    start = time.perf_counter()
    with pytest.raises(LocalEntryNotFoundError):
        huggingface_hub.hf_hub_download("no-such-org/no-such-model", "config.json", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5.0


def test_transformers_and_diffusers_see_it(online_client, request, tmp_path):
    from diffusers.utils import hub_utils  # noqa: F401  (imported online too)
    from transformers.utils import hub as transformers_hub

    request.getfixturevalue("offline_hub")
    assert transformers_hub.is_offline_mode()
    from transformers import AutoConfig

    start = time.perf_counter()
    with pytest.raises(OSError, match="cached files"):
        AutoConfig.from_pretrained("no-such-org/no-such-model", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5.0
