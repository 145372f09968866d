"""Loading pretrained transformers models by hub id or local folder, with one-line errors when they are missing."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from single_image_nerf.preprocess.errors import PreprocessError
from single_image_nerf.pretrained import ModelUnavailableError, resolve_hub_weights


def load_pretrained(loaders: Sequence[Callable[..., Any]], model_id: str, what: str, flag: str, skip_flag: str,
                    **kwargs: Any) -> list:
    """`loader(folder, **kwargs)` for each loader (`from_pretrained`s) on the local folder of `model_id`, downloaded
    into the project's cache on first use; a model that cannot be had becomes one PreprocessError line naming the
    model, why, and how to supply it (a local folder through `flag`) or skip the step (`skip_flag`)."""
    try:
        folder = resolve_hub_weights(model_id, f"{what} model", flag, ("config.json",))
    except ModelUnavailableError as error:
        raise PreprocessError(f"{error}, or skip this step with {skip_flag}") from None
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
