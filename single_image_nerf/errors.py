"""The one error type users see: a problem with what they gave us, printed as a single line."""

from __future__ import annotations


class UserInputError(SystemExit):
    """A bad input or option. Uncaught, Python prints the message alone (no traceback) and exits with status 1;
    code that wants to recover can still catch it."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(message.split())
        super().__init__(f"single-image-nerf: error: {self.message}")

    def __str__(self) -> str:
        return self.message
