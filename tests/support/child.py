"""The environment of a child Python that imports the same prism_native as the tests do: the installed
package in CI (a fresh clone's src/ has no compiled extension), src/ in a development tree."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

TESTS = Path(__file__).resolve().parents[1]


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default os.environ) with PYTHONPATH leading to this process's prism_native and to tests/
    (for `support`), and `extra` variables set."""
    import prism_native
    home = str(Path(prism_native.__file__).resolve().parents[1])
    env = dict(os.environ if base is None else base, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, str(TESTS), env.get("PYTHONPATH", "")) if p)
    return env
