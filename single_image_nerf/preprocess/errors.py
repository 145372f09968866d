"""The one error type of preprocessing: its message names the problem and the fix, on one line."""

from __future__ import annotations


class PreprocessError(ValueError):
    """A photo or an option that preprocessing cannot use; the message says what is wrong and what to do.

    The command line prints the message alone (no traceback) and exits with a non-zero status.
    """
