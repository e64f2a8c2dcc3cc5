"""Progress of a long loop: a tqdm bar on a terminal; sparse plain lines in logs (stderr not a TTY, or CI set).

``STEMSIFT_PROGRESS`` overrides the choice: ``bar``, ``plain`` or ``off``. Plain mode never floods a CI log: a
loop of known length prints at most one line per tenth of it, none closer than ``PLAIN_MIN_SECONDS`` apart, and a
last line when it ends; a loop of unknown length prints at most one line per ``PLAIN_EVERY_SECONDS``. A loop that
ends within ``PLAIN_MIN_SECONDS`` prints nothing (a stage's one-line error stays the only line on stderr)."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

PLAIN_MIN_SECONDS = 5.0     # a shorter loop says nothing
PLAIN_EVERY_SECONDS = 30.0  # unknown length: a heartbeat


def mode() -> str:
    """'bar', 'plain' or 'off' for this process's stderr."""
    forced = os.environ.get("STEMSIFT_PROGRESS", "").strip().lower()
    if forced in ("bar", "plain", "off"):
        return forced
    if os.environ.get("CI") or not _isatty(sys.stderr):
        return "plain"
    return "bar"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream (pytest's capture, a pipe wrapper)
        return False


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` unchanged (same items, same order, lazily), showing progress on stderr."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    m = mode()
    if m == "off":
        return iter(iterable)
    if m == "bar":
        from tqdm import tqdm

        # worker processes (spawned trainings) take a line each instead of overwriting the parent's bar
        slot = (mp.current_process()._identity or (0,))[0]
        return iter(tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         mininterval=0.5, position=slot or None, leave=slot == 0))
    return _plain(iterable, total, desc, unit)


def _plain(iterable: Iterable[T], total: int | None, desc: str, unit: str) -> Iterator[T]:
    t0 = last = time.monotonic()
    n, shown_tenth = 0, 0
    name = f"{desc}: " if desc else ""

    def say(text: str) -> None:
        print(f"{name}{text} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)

    try:
        for item in iterable:
            n += 1  # counted when handed out: a loop that breaks on its 10th item stopped at 10
            yield item
            now = time.monotonic()
            if total:
                tenth = min(10 * n // total, 9)  # the last tenth is the closing line's
                if tenth > shown_tenth and now - last >= PLAIN_MIN_SECONDS:
                    say(f"{n}/{total} {unit} ({100 * n // total}%)")
                    shown_tenth, last = tenth, now
            elif now - last >= PLAIN_EVERY_SECONDS:
                say(f"{n} {unit}")
                last = now
    finally:  # also when the loop stops early (break, early stopping, an error)
        if time.monotonic() - t0 >= PLAIN_MIN_SECONDS:
            say(f"{n}/{total} {unit} done" if total and n == total else
                f"stopped at {n}/{total} {unit}" if total else f"{n} {unit} done")
