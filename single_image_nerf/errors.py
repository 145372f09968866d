"""The one error type users see: a problem with what they gave us, printed as a single line."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserInputError(SystemExit):
    """A bad input or option. Uncaught, Python prints the message alone (no traceback) and exits with status 1;
    code that wants to recover can still catch it. The console commands catch it (`run_command`) to put their own
    name in front of the line; elsewhere (ns-train, ns-export) the line starts with the project's name."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(message.split())
        super().__init__(f"single-image-nerf: error: {self.message}")

    def __str__(self) -> str:
        return self.message


def run_command(name: str, body: Callable[[], T], status: int = 1) -> T:
    """`body()` of the console command `name`; a UserInputError ends it with the one line `NAME: error: MESSAGE` on
    stderr and exit `status`, so that every command names itself in its errors."""
    try:
        return body()
    except UserInputError as error:
        print(f"{name}: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(status) from None
