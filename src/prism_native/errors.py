"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a traceback."""
from __future__ import annotations


class PrismError(Exception):
    """A problem with the user's input (file, arguments, budget); printed as one line, exit code 2."""

    exit_code = 2
