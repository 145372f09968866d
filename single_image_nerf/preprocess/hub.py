"""Loading pretrained transformers models by hub id or local folder, with one-line errors when they are missing."""

from __future__ import annotations

from typing import Any, Callable

from single_image_nerf.preprocess.errors import PreprocessError


def load_pretrained(loader: Callable[..., Any], model_id: str, what: str, flag: str, skip_flag: str, **kwargs: Any) -> Any:
    """`loader(model_id, **kwargs)` (a `from_pretrained`), turning a missing model into a PreprocessError.

    The message names the model and how to supply it: a download with network, a local folder through `flag`,
    or skipping the step with `skip_flag`.
    """
    try:
        return loader(model_id, **kwargs)
    except (OSError, ValueError) as error:
        reason = _first_sentence(error)
        raise PreprocessError(
            f"cannot load the {what} model '{model_id}' ({reason}); run once with network to download it, "
            f"or pass a local folder with {flag} PATH, or skip this step with {skip_flag}"
        ) from None


def _first_sentence(error: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message, shortened, for one-line errors."""
    text = " ".join(str(error).split())
    sentence = text.split(". ")[0].rstrip(".") if text else type(error).__name__
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."
