"""Peak RSS of one child process alone, for the benches that run native tools (qemu-img) too.

``os.wait4``'s ``ru_maxrss`` is not that figure: Linux carries the high-water mark of the forking
process over ``exec``, so a child started by a bench holding 200 MiB reports at least 200 MiB
(``true`` included). The command is run under GNU ``time``, a small process of its own whose
child starts from ``time``'s ~1 MiB, and ``time`` writes that child's ``ru_maxrss`` to a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

GNU_TIME = "/usr/bin/time"


def _have_gnu_time() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        if shutil.which("apt-get") and os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "time"], capture_output=True)
        if not os.access(GNU_TIME, os.X_OK):
            return False
    probe = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stderr.strip().isdigit()


HAVE_GNU_TIME = _have_gnu_time()


class PeakRss:
    """``argv`` wrapped so that ``kib()`` after the child ended is its own peak RSS (None
    without GNU time: then no figure is better than the bench's own RSS passed off as the
    child's)."""

    def __init__(self, argv: list[str]) -> None:
        if HAVE_GNU_TIME:
            fd, self.path = tempfile.mkstemp(prefix="peak-rss-")
            os.close(fd)
            self.argv = [GNU_TIME, "-q", "-f", "%M", "-o", self.path, *argv]
        else:
            self.path, self.argv = None, list(argv)

    def kib(self) -> int | None:
        if self.path is None:
            return None
        try:
            with open(self.path) as f:
                lines = f.read().split()
            return int(lines[-1]) if lines and lines[-1].isdigit() else None
        finally:
            os.unlink(self.path)


def mib_text(kib: int | None) -> str:
    return "n/a (no GNU time)" if kib is None else f"{kib / 1024:.1f} MiB"
