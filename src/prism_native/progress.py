"""A small progress line on stderr (item name, share done, rate, time left); silent when stderr is not a
TTY unless forced, so logs and CI stay clean."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def fmt_secs(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:d}:{sec:02d}"


@dataclass
class Progress:
    total: float                      # total work units (e.g. parameters to measure)
    label: str = ""
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    enabled: bool | None = None       # None: only on a terminal
    width: int = 28
    rate_unit: str = ""               # e.g. "MB/s": show done * rate_scale per second
    rate_scale: float = 1.0
    _done: float = 0.0
    _start: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def __post_init__(self) -> None:
        if self.enabled is None:
            self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done_units: float, item: str = "") -> None:
        self._done += done_units
        self.show(item)

    def show(self, item: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, self._done / self.total) if self.total else 1.0
        el = now - self._start
        left = el * (1 - frac) / frac if frac > 0 else 0.0
        bar = "#" * int(frac * self.width)
        rate = f" {self._done * self.rate_scale / el:7.1f} {self.rate_unit}," if self.rate_unit and el > 0 else ""
        line = (f"\r{self.label} [{bar:<{self.width}}] {frac * 100:5.1f}%{rate} {fmt_secs(el)} elapsed, "
                f"{fmt_secs(left)} left  {item[:48]:<48}")
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()
