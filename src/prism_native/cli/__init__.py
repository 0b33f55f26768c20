"""The command line, one module per sub-command."""
from __future__ import annotations

from .main import main

__all__ = ["main"]
