"""Byte-size parsing for options such as ``--part-size`` (``10MiB``, ``10M``, ``10485760``)."""

from __future__ import annotations

import re

from manifestkit.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a size; suffixes are binary (``M`` = ``MiB``), as dd and qemu-img read them."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(
            f"invalid size {text!r}", fix="give bytes or a number with K, M, G or T (e.g. 10MiB)"
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_size(n: int) -> str:
    """Human form for messages: ``10.0 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
