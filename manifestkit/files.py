"""Files that hold bearer tokens or account details: written whole, atomically, mode 0600."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_private_file(
    path: str | os.PathLike[str], *, prefix: str, mode: str = "wb", buffering: int = -1
) -> Iterator[IO[Any]]:
    """Yield a temp file beside ``path``; on success fsync it and rename it over ``path``.

    The temp file is created 0600 (mkstemp), so presigned URLs or state never sit
    world-readable, and a reader never sees half a file: ``path`` is replaced only once the new
    content is complete. On any error (Ctrl-C included) the temp file is removed and ``path`` is
    untouched.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, buffering=buffering) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # mkstemp's mode already; stays so whatever the platform did
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
