"""Loading pretrained transformers models by hub id or local folder, with one-line errors when they are missing."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional, Sequence

from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.pretrained import ModelUnavailableError, resolve_hub_model, resolve_hub_weights, weights_variant


def model_config(model_id: str, what: str, flag: str, skip_flag: str) -> Dict[str, Any]:
    """The config.json of `model_id` (fetched alone, before any weight), as a dict; one PreprocessError line when it
    cannot be had or read."""
    try:
        folder = resolve_hub_model(model_id, f"{what} model", flag, ("*.json",), ("config.json",))
    except ModelUnavailableError as error:
        raise PreprocessError(f"{error}, or skip this step with {skip_flag}") from None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        config = error
    if not isinstance(config, dict):
        raise PreprocessError(f"the {what} model '{model_id}' has an unreadable config.json in {folder}; pass a "
                              f"complete local folder with {flag} PATH, or skip this step with {skip_flag}")
    return config


def load_pretrained(loaders: Sequence[Callable[..., Any]], model_id: str, what: str, flag: str, skip_flag: str,
                    variant: Optional[str] = None, **kwargs: Any) -> list:
    """`loader(folder, **kwargs)` for each loader (`from_pretrained`s) on the local folder of `model_id`, downloaded
    into the project's cache on first use (its `variant` weights, fp16 for a half-precision run, where published); a
    model that cannot be had becomes one PreprocessError line naming the model, why, and how to supply it (a local
    folder through `flag`) or skip the step (`skip_flag`)."""
    try:
        folder = resolve_hub_weights(model_id, f"{what} model", flag, ("config.json",), variant=variant)
    except ModelUnavailableError as error:
        raise PreprocessError(f"{error}, or skip this step with {skip_flag}") from None
    if variant is not None:  # the model's loader: read the variant fetched (or the full-precision files)
        kwargs["variant"] = weights_variant(folder, ("",), variant)
    loaded = []
    for loader in loaders:
        try:
            loaded.append(loader(str(folder), **kwargs))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PreprocessError(
                f"cannot load the {what} model '{model_id}' from {folder} ({_first_sentence(error)}); pass a "
                f"complete local folder with {flag} PATH, or skip this step with {skip_flag}"
            ) from None
    return loaded


def _first_sentence(error: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message, shortened, for one-line errors."""
    text = " ".join(str(error).split())
    sentence = text.split(". ")[0].rstrip(".") if text else type(error).__name__
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."
