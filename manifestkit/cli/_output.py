"""What commands print: one JSON document with ``--output json``, text otherwise; tqdm progress.

tqdm is imported by the first progress bar, not here: ``inspect`` never draws one.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

#: whether this run printed its JSON document already (the entry point owes one otherwise)
_emitted = False


def reset() -> None:
    global _emitted
    _emitted = False


def emitted() -> bool:
    return _emitted


def emit_json(document: Any) -> None:
    """The run's one JSON document, on stdout."""
    import json  # only --output json needs it

    global _emitted
    _emitted = True
    json.dump(document, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def plural(count: int, noun: str) -> str:
    """``1 part``, ``2 parts``: the form people read in a summary line."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def emit(args: argparse.Namespace, document: Any, text: str) -> None:
    """Print ``document`` as JSON or ``text`` for people, on stdout."""
    if getattr(args, "output", "text") == "json":
        emit_json(document)
        return
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


class TqdmProgress:
    """A ``manifestkit.progress.Progress`` drawn with tqdm on stderr; silent off a TTY or -q."""

    def __init__(self, *, quiet: bool = False, unit: str = "B") -> None:
        self._disable = quiet or not sys.stderr.isatty()
        self._unit = unit
        self._bar: tqdm | None = None

    def start(self, total: int, description: str) -> None:
        self.close()
        if self._disable:  # no bar to draw: no tqdm to load
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=description,
            unit=self._unit,
            unit_scale=self._unit == "B",
            unit_divisor=1024,
            disable=self._disable,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_for(args: argparse.Namespace, unit: str = "B") -> TqdmProgress:
    return TqdmProgress(quiet=bool(getattr(args, "quiet", False)), unit=unit)
