"""The two consoles every command prints through: results on stdout, messages and progress on stderr."""

from __future__ import annotations

from rich.console import Console


def _console(stderr: bool = False) -> Console:
    # CI logs are not terminals: rich would assume 80 columns and cut names ("intelligibi…") and
    # numbers; 160 keeps every table whole.
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=160)


out = _console()
err = _console(stderr=True)
