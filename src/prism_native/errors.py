"""The exceptions prism_native raises for problems with the user's input, tools or budget.

Library code raises these; only the CLI turns them into one line on stderr and exit code 2. A bug
(an internal invariant that does not hold) is never one of these: it stays a real exception with its
traceback.
"""
from __future__ import annotations


class PrismError(Exception):
    """A problem with the user's input (file, arguments, budget, tools); one line, exit code 2."""

    exit_code = 2


class UsageError(PrismError, ValueError):
    """Bad arguments: an unknown type name, a malformed option, a path that cannot be used.
    Also a ValueError, so that callers of the Python API can catch it as one."""


class FileFormatError(PrismError):
    """An input file (GGUF model, imatrix, results or ablation file) that is missing, truncated,
    malformed or of a kind prism_native cannot read."""


class BudgetError(PrismError):
    """A size or bits-per-weight budget that no allowed assignment of types can meet."""


class RecipeError(PrismError):
    """A llama-quantize command or recipe that llama-quantize would reject or that cannot be carried out."""


class ToolError(PrismError):
    """A llama.cpp tool that is missing, or that failed."""


class OutputError(PrismError):
    """The output cannot be written (same file as the input, unwritable folder, full disk)."""


def quoted(text: str, limit: int = 80) -> str:
    """A key or tensor name as error messages show it: quoted, control characters escaped (the message
    stays one line), cut after `limit` characters (a key may be a megabyte long)."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return f"'{shown[:limit]}...'" if len(shown) > limit else f"'{shown}'"
