"""The one progress bar every long job uses (data builders, dataset loading, training, eval).

On a terminal it is an ordinary tqdm bar. When stderr is not a terminal (`> log 2>&1`, nohup,
CI, a service's journal) a redrawn bar would write thousands of carriage-return updates into the
file, so the bar becomes plain log lines instead: one line at most every `LOG_INTERVAL_S` seconds
(`$BLINKGEN_PROGRESS_INTERVAL` overrides it), plus one when it finishes. `TQDM_DISABLE=1` still
turns every bar off.
"""
from __future__ import annotations

import os
import re
import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
_BAR = re.compile(r"\|[^|]*\|")
ENV_INTERVAL = "BLINKGEN_PROGRESS_INTERVAL"


class _LineWriter:
    """A file for tqdm that turns its carriage-return redraws into whole lines, dropping a line
    whose count did not move (tqdm redraws the last state when it closes)."""

    def __init__(self, stream):
        self.stream = stream
        self._last = None

    def write(self, s: str) -> None:
        line = s.replace("\r", "").replace("\x1b[A", "").strip()
        # "desc: 40%| 4/10": the count without the bar, whose width follows the rate's digits
        # (tqdm's close redraws the last count at a new rate), nor the times and rate
        key = _BAR.sub("|", line.split(" [")[0])
        if line and key != self._last:
            self._last = key
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """tqdm for log files: `set_postfix` and `set_description` never force a redraw (tqdm's
    default refresh=True would write a line per call, bypassing the interval); the new text shows
    on the next timed line."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc=None, refresh=False):
        super().set_description(desc, refresh=False)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_INTERVAL, LOG_INTERVAL_S)))
    except ValueError:
        return LOG_INTERVAL_S


def _env_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it",
        initial: int = 0, leave: bool = True, enabled: bool = True, stream=None) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total`): live on a terminal, periodic
    log lines elsewhere (see the module doc). enabled=False gives a silent bar with the same API
    (`update`, `set_postfix`, `write`, `close`)."""
    stream = sys.stderr if stream is None else stream
    kw = dict(iterable=iterable, desc=desc, total=total, unit=unit, initial=initial,
              disable=not enabled or _env_disabled())
    if is_terminal(stream):
        return tqdm(**kw, leave=leave, file=stream, dynamic_ncols=True)
    # Not a terminal: the width is fixed, updates rare; `leave` keeps the final line in the log.
    return _LogBar(**kw, leave=True, file=_LineWriter(stream), mininterval=_interval(), maxinterval=float("inf"),
                miniters=1, ncols=100, ascii=True)
