"""The journal of one ``import-ami`` run: the step it reached and every id it created.

Written (atomically, mode 0600: it holds the manifest's presigned URL, a bearer token) before each
EC2 call that creates something and again when the call answers, so a run stopped anywhere —
Ctrl-C, a failure, SIGKILL — is continued by running the same command again, and nothing is
created twice. Place: beside the image when its folder is writable, else (or with
``--state-dir DIR``) in DIR or ``$XDG_STATE_HOME/manifestkit``; the file name carries a hash of
the image's absolute path, the AMI name and the region, so each (image, name, region) has its own.

The file is untrusted input (design.md §4b): every field is type-checked and every id must look
like the kind of id it names before the journal is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifestkit.errors import UsageError
from manifestkit.files import atomic_private_file, json_type_ok, read_small_json
from manifestkit.workflow.upload_state import default_state_dir, started_now

SUFFIX = ".manifestkit-ami.json"
FORMAT_VERSION = 1
#: a journal is a few KiB; anything much larger is not one
MAX_BYTES = 1 << 20

#: the steps, in order; ``step`` is the last one started (its ids may be partly recorded)
STEPS = ("start", "upload", "import", "snapshot", "register", "copy", "share", "cleanup", "done")

_IDS = {
    "task_id": re.compile(r"import-(vol|i)-[0-9a-zA-Z]{1,64}"),
    "volume_id": re.compile(r"vol-[0-9a-f]{1,64}"),
    "snapshot_id": re.compile(r"snap-[0-9a-f]{1,64}"),
    "image_id": re.compile(r"ami-[0-9a-f]{1,64}"),
}
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+){1,4}")


@dataclass(frozen=True)
class CopyRecord:
    """One CopyImage: the destination region, the copy's id, and how far it got."""

    region: str
    image_id: str | None = None
    snapshot_ids: tuple[str, ...] = ()
    available: bool = False
    shared: bool = False


@dataclass(frozen=True)
class AmiJournal:
    run_id: str
    image: str
    name: str
    region: str
    step: str = "start"
    started_at: str = ""
    #: the manifest's presigned GET URL (bearer token; the file is 0600); None once deleted
    manifest_url: str | None = None
    bucket: str | None = None
    manifest_key: str | None = None
    #: what ImportVolume sends (``Image.Format``, ``Image.Bytes``, ``Volume.Size``)
    file_format: str | None = None
    file_bytes: int | None = None
    import_gib: int | None = None
    task_id: str | None = None
    availability_zone: str | None = None
    volume_id: str | None = None
    volume_gib: int | None = None
    volume_deleted: bool = False
    snapshot_id: str | None = None
    snapshot_gib: int | None = None
    image_id: str | None = None
    image_available: bool = False
    copies: tuple[CopyRecord, ...] = ()
    shared: bool = False
    upload_deleted: bool = False
    #: what a failed run removed again (ids and ``s3://`` places), for the record
    removed: tuple[str, ...] = ()
    version: int = FORMAT_VERSION

    def copy_for(self, region: str) -> CopyRecord:
        return next((c for c in self.copies if c.region == region), CopyRecord(region))

    def with_copy(self, record: CopyRecord) -> AmiJournal:
        others = tuple(c for c in self.copies if c.region != record.region)
        return dataclasses.replace(self, copies=(*others, record))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["copies"] = [dataclasses.asdict(c) for c in self.copies]
        return data


def new_journal(image: str, name: str, region: str) -> AmiJournal:
    return AmiJournal(
        run_id=uuid.uuid4().hex[:16],
        image=os.path.abspath(image),
        name=name,
        region=region,
        started_at=started_now(),
    )


def journal_path(image: str, name: str, region: str, state_dir: str | None) -> Path:
    absolute = Path(os.path.abspath(image))
    digest = hashlib.sha256(f"{absolute}\0{name}\0{region}".encode()).hexdigest()[:12]
    filename = f"{absolute.name}-ami-{digest}{SUFFIX}"
    if state_dir is not None:
        return Path(state_dir) / filename
    if os.access(absolute.parent, os.W_OK):
        return absolute.parent / filename
    return default_state_dir() / filename


def write_journal(path: Path, journal: AmiJournal) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_private_file(path, prefix=".manifestkit-ami-", mode="w") as out:
        json.dump(journal.to_dict(), out, indent=2)
        out.write("\n")


def _bad(path: Path, what: str) -> UsageError:
    return UsageError(
        f"{path}: not a manifestkit import-ami journal ({what})",
        fix="move it away to start over (whatever it recorded stays in AWS, tagged "
        "manifestkit:run)",
    )


#: the JSON type of every field (the file is untrusted: checked before use)
_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "image": (str,),
    "name": (str,),
    "region": (str,),
    "step": (str,),
    "started_at": (str,),
    "manifest_url": (str, type(None)),
    "bucket": (str, type(None)),
    "manifest_key": (str, type(None)),
    "file_format": (str, type(None)),
    "file_bytes": (int, type(None)),
    "import_gib": (int, type(None)),
    "task_id": (str, type(None)),
    "availability_zone": (str, type(None)),
    "volume_id": (str, type(None)),
    "volume_gib": (int, type(None)),
    "volume_deleted": (bool,),
    "snapshot_id": (str, type(None)),
    "snapshot_gib": (int, type(None)),
    "image_id": (str, type(None)),
    "image_available": (bool,),
    "copies": (list,),
    "shared": (bool,),
    "upload_deleted": (bool,),
    "removed": (list,),
    "version": (int,),
}


def _check_id(path: Path, name: str, value: Any) -> None:
    pattern = _IDS.get(name)
    if pattern is not None and value is not None and not pattern.fullmatch(value):
        raise _bad(path, f"{name} {value!r} is not such an id")


def _copy_from(path: Path, raw: Any) -> CopyRecord:
    if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(CopyRecord)}:
        raise _bad(path, "a copy record has other fields")
    region, image_id, snapshots = raw["region"], raw["image_id"], raw["snapshot_ids"]
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise _bad(path, f"copy region {region!r}")
    _check_id(path, "image_id", image_id if isinstance(image_id, str) or image_id is None else "?")
    if not isinstance(snapshots, list) or not all(isinstance(s, str) for s in snapshots):
        raise _bad(path, "copy snapshot ids")
    for snapshot in snapshots:
        _check_id(path, "snapshot_id", snapshot)
    if not isinstance(raw["available"], bool) or not isinstance(raw["shared"], bool):
        raise _bad(path, "copy flags")
    return CopyRecord(region, image_id, tuple(snapshots), raw["available"], raw["shared"])


def read_journal(path: Path) -> AmiJournal:
    try:
        raw = read_small_json(path, MAX_BYTES)
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror}", fix="check its permissions"
        ) from exc
    except ValueError as exc:
        raise _bad(path, str(exc)) from exc
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise _bad(path, f"not version {FORMAT_VERSION}")
    if set(raw) != set(_TYPES):
        raise _bad(path, "unexpected or missing fields")
    for name, types in _TYPES.items():
        value = raw[name]
        if not json_type_ok(value, types):
            raise _bad(path, f"{name} has the wrong type")
        _check_id(path, name, value)
    if raw["step"] not in STEPS:
        raise _bad(path, f"unknown step {raw['step']!r}")
    if not all(isinstance(r, str) for r in raw["removed"]):
        raise _bad(path, "removed list")
    raw["copies"] = tuple(_copy_from(path, c) for c in raw["copies"])
    raw["removed"] = tuple(raw["removed"])
    return AmiJournal(**raw)


@dataclass
class Journal:
    """The current record and where it lives (``path`` None: kept in memory only, e.g.
    ``--local``, whose sandbox ends with the command)."""

    record: AmiJournal
    path: Path | None = None
    #: True when the record was read from an earlier run's file
    continued: bool = False

    def update(self, **changes: Any) -> AmiJournal:
        self.record = dataclasses.replace(self.record, **changes)
        if self.path is not None:
            write_journal(self.path, self.record)
        return self.record

    def step(self, name: str) -> None:
        # the journal keeps the furthest step reached; a continued run re-enters earlier ones
        if STEPS.index(name) > STEPS.index(self.record.step):
            self.update(step=name)


def open_journal(
    image: str, name: str, region: str, state_dir: str | None, *, record: bool
) -> Journal:
    if not record:
        return Journal(new_journal(image, name, region))
    path = journal_path(image, name, region, state_dir)
    if path.exists():
        journal = read_journal(path)
        if (journal.image, journal.name, journal.region) != (os.path.abspath(image), name, region):
            raise _bad(path, "it records another image, name or region")
        return Journal(journal, path, continued=True)
    # written at its first update: input refused before then leaves no file behind
    return Journal(new_journal(image, name, region), path)
