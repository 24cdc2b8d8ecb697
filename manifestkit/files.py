"""Files that hold bearer tokens or account details: written whole, atomically, mode 0600, and
read back as the untrusted input they are (design.md §4b: bounded, typed field by field).

Temporary files are locked (``flock``) for as long as their writer lives, so a temp file left by
a process that was killed (SIGKILL, a power cut: no clean-up code runs) is told apart from one
being written right now, and ``remove_stale`` removes it the next time a file of that kind is
written in that folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Any


def remove_stale(directory: str, prefix: str, suffix: str) -> int:
    """Remove ``{prefix}*{suffix}`` files in ``directory`` that a dead writer left; the count.

    Only regular files owned by this user whose lock nobody holds, and only in a folder where
    nobody else can swap names under us (not writable by others, or sticky like /tmp).
    """
    try:
        folder = os.stat(directory)
        names = os.listdir(directory)
    except OSError:
        return 0
    shared = folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if shared and not folder.st_mode & stat.S_ISVTX:
        return 0
    uid = os.getuid()
    removed = 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            again = os.lstat(path)
            if (again.st_dev, again.st_ino) == (info.st_dev, info.st_ino):
                os.unlink(path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def locked_temp_file(directory: str | None, prefix: str, suffix: str) -> tuple[int, str]:
    """``mkstemp`` (mode 0600), locked for this process's lifetime; stale siblings removed."""
    folder = directory if directory is not None else tempfile.gettempdir()
    remove_stale(folder, prefix, suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without flock: the file is still private and removed on error
        pass
    return fd, tmp


@contextlib.contextmanager
def atomic_private_file(
    path: str | os.PathLike[str], *, prefix: str, mode: str = "wb", buffering: int = -1
) -> Iterator[IO[Any]]:
    """Yield a temp file beside ``path``; on success fsync it and rename it over ``path``.

    The temp file is created 0600 (mkstemp), so presigned URLs or state never sit
    world-readable, and a reader never sees half a file: ``path`` is replaced only once the new
    content is complete. On any error (Ctrl-C, SIGTERM/SIGHUP through the CLI, included) the
    temp file is removed and ``path`` is untouched; one a killed writer left is removed by the
    next write in that folder (``remove_stale``). The rename happens while the lock is held.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = locked_temp_file(directory, prefix, ".tmp")
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


def read_small_json(path: str | os.PathLike[str], max_bytes: int) -> object:
    """The JSON document in ``path`` (a state file or journal of ours, which anybody with access
    to the folder may have rewritten), read within ``max_bytes``.

    Raises ``OSError`` when it cannot be read, ``ValueError`` saying why it is not usable: too
    large, not UTF-8 JSON, or nested too deeply for the parser (``RecursionError``).
    """
    with open(path, "rb") as src:
        data = src.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"it is larger than {max_bytes:,} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"it is not JSON ({str(exc)[:80]})") from exc


def json_type_ok(value: object, types: tuple[type, ...]) -> bool:
    """Whether a decoded JSON ``value`` has one of ``types``; true and false are not numbers
    here, though Python's bool is an int."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
