"""`PYTHONPATH=src python -m tests.fuzz [--mutants 2000] [--seed 0]`: the full mutation run and its table."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")       # before numpy: forked children share no BLAS pool
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # `from support import synth`

from .campaign import main  # noqa: E402

raise SystemExit(main())
