"""The local record of an upload, so ``--resume`` finds it after Ctrl-C, a crash or SIGKILL.

Written before the first part is sent and rewritten atomically (temp file + rename, mode 0600) when
the upload completes. It holds no secrets and no URLs: bucket, key prefix, upload id, part size, and
the image's size and mtime to notice that it changed. Default place: beside the image
(``<image>.manifestkit-state.json``); with ``--state-dir DIR``, or when the image's directory is not
writable, ``DIR/<basename>-<hash of the absolute path>.manifestkit-state.json`` (DIR defaulting to
``$XDG_STATE_HOME/manifestkit`` or ``~/.local/state/manifestkit``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifestkit.errors import UsageError
from manifestkit.files import atomic_private_file, json_type_ok, read_small_json
from manifestkit.parts import PartPlan, key_prefix

SUFFIX = ".manifestkit-state.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class UploadState:
    image: str
    file_bytes: int
    mtime_ns: int
    bucket: str
    prefix: str
    upload_id: str
    part_size: int
    #: the name used in the keys (the image's basename when the upload started)
    basename: str
    region: str
    file_format: str
    volume_gib: int
    s3_endpoint_url: str | None = None
    expected_bucket_owner: str | None = None
    complete: bool = False
    started_at: str = ""
    #: the parts are of a streamOptimized copy made by --convert (made again on resume)
    converted: bool = False
    version: int = FORMAT_VERSION
    #: a conversion streamed into the parts (``workflow.stream_upload``): the source's identity
    #: and the converter's settings, which a resume must find unchanged; ``file_bytes`` is 0
    #: until the stream has ended
    stream: dict[str, Any] | None = None

    def plan(self) -> PartPlan:
        return PartPlan(
            file_bytes=self.file_bytes,
            part_size=self.part_size,
            basename=self.basename,
            prefix=self.prefix,
            upload_id=self.upload_id,
        )

    @property
    def manifest_key(self) -> str:
        return self.plan().manifest_key

    @property
    def key_prefix(self) -> str:
        """The upload's folder (known before the size of a streamed upload is)."""
        return key_prefix(self.prefix, self.upload_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def new_state(
    image: str | os.PathLike[str],
    plan: PartPlan,
    *,
    bucket: str,
    region: str,
    file_format: str,
    volume_gib: int,
    s3_endpoint_url: str | None = None,
    expected_bucket_owner: str | None = None,
) -> UploadState:
    st = os.stat(image)
    return UploadState(
        image=os.path.abspath(image),
        file_bytes=plan.file_bytes,
        mtime_ns=st.st_mtime_ns,
        bucket=bucket,
        prefix=plan.prefix,
        upload_id=plan.upload_id,
        part_size=plan.part_size,
        basename=plan.basename,
        region=region,
        file_format=file_format,
        volume_gib=volume_gib,
        s3_endpoint_url=s3_endpoint_url,
        expected_bucket_owner=expected_bucket_owner,
        started_at=started_now(),
    )


def started_now() -> str:
    """A state file's ``started_at``: UTC, whole seconds, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def default_state_dir() -> Path:
    """Where state files go when the image's folder is not writable (XDG state home)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "manifestkit"


def _in_dir(image: Path, directory: Path) -> Path:
    digest = hashlib.sha256(str(image).encode()).hexdigest()[:12]
    return directory / f"{image.name}-{digest}{SUFFIX}"


def candidate_paths(
    image: str | os.PathLike[str], state_dir: str | os.PathLike[str] | None
) -> list[Path]:
    """Where the state for ``image`` may be, in the order they are looked up."""
    absolute = Path(os.path.abspath(image))
    if state_dir is not None:
        return [_in_dir(absolute, Path(state_dir))]
    return [absolute.with_name(absolute.name + SUFFIX), _in_dir(absolute, default_state_dir())]


def state_path_for(image: str | os.PathLike[str], state_dir: str | os.PathLike[str] | None) -> Path:
    """Where a new state file goes: beside the image when that directory is writable."""
    beside, *others = candidate_paths(image, state_dir)
    if state_dir is not None or os.access(beside.parent, os.W_OK):
        return beside
    return others[0]


def write_state(path: Path, state: UploadState) -> None:
    """Atomically replace ``path`` (mode 0600: it names buckets and keys)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_private_file(path, prefix=".manifestkit-state-", mode="w") as out:
        json.dump(state.to_dict(), out, indent=2)
        out.write("\n")


#: a state file is about 600 bytes; anything much larger is not one (and is not read whole)
MAX_STATE_BYTES = 64 * 1024

#: the JSON type each field must have (bool is not an int here, though Python says it is)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "image": (str,),
    "file_bytes": (int,),
    "mtime_ns": (int,),
    "bucket": (str,),
    "prefix": (str,),
    "upload_id": (str,),
    "part_size": (int,),
    "basename": (str,),
    "region": (str,),
    "file_format": (str,),
    "volume_gib": (int,),
    "s3_endpoint_url": (str, type(None)),
    "expected_bucket_owner": (str, type(None)),
    "complete": (bool,),
    "started_at": (str,),
    "converted": (bool,),
    "version": (int,),
    # its entries are checked by workflow.stream_upload, which reads them
    "stream": (dict, type(None)),
}
_JSON_NAMES = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    dict: "an object",
    type(None): "null",
}
_FORMATS = ("VMDK", "VHD", "RAW")


def _bad_state(path: Path, what: str) -> UsageError:
    return UsageError(
        f"{path}: not a usable manifestkit upload state file: {what}",
        fix=f"delete {path} and start the upload again (or, if its parts are in S3, "
        "run: manifestkit resume MANIFEST_URL IMAGE)",
    )


def _check_fields(path: Path, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad_state(path, "it is not a JSON object")
    if raw.get("version") != FORMAT_VERSION:
        raise _bad_state(path, f"it is not version {FORMAT_VERSION}")
    unknown = sorted(set(raw) - _FIELD_TYPES.keys())
    if unknown:
        raise _bad_state(path, f"unknown field {unknown[0][:40]!r}")
    for name, types in _FIELD_TYPES.items():
        if name not in raw:
            default = UploadState.__dataclass_fields__[name].default
            if default is dataclasses.MISSING:
                raise _bad_state(path, f"{name!r} is missing")
            continue
        value = raw[name]
        if not json_type_ok(value, types):
            expected = " or ".join(_JSON_NAMES[t] for t in types)
            raise _bad_state(path, f"{name!r} must be {expected}, not {type(value).__name__}")
    # a streamed conversion's size is known only once it has ended (0 until then)
    streaming = raw.get("stream") is not None and not raw.get("complete", False)
    for name in ("file_bytes", "part_size", "volume_gib"):
        least = 0 if name == "file_bytes" and streaming else 1
        if raw[name] < least:
            raise _bad_state(path, f"{name!r} must be at least {least}, not {raw[name]}")
    if raw["file_format"] not in _FORMATS:
        raise _bad_state(path, f"'file_format' must be one of {', '.join(_FORMATS)}")
    return raw


def read_state(path: Path) -> UploadState:
    """The state in ``path``, read within ``MAX_STATE_BYTES`` and checked field by field (a state
    file is untrusted input, design.md §4b: what it says is checked against the image too)."""
    try:
        raw = read_small_json(path, MAX_STATE_BYTES)
    except OSError as exc:
        raise UsageError(
            f"cannot read upload state {path}: {exc.strerror or exc}",
            fix="delete it and start a new upload, or resume from the manifest URL",
        ) from exc
    except ValueError as exc:
        raise _bad_state(path, str(exc)) from exc
    state = UploadState(**_check_fields(path, raw))
    from manifestkit.s3.bucket_names import bucket_name_problem

    problem = bucket_name_problem(state.bucket)
    if problem is not None:
        raise _bad_state(path, f"bucket {state.bucket[:70]!r}: {problem}")
    if not state.upload_id or "/" in state.upload_id or len(state.upload_id) > 200:
        raise _bad_state(path, f"upload id {state.upload_id[:70]!r} is not one an upload has")
    try:
        # the bucket keys it names must be ones an upload can have
        PartPlan(
            file_bytes=max(state.file_bytes, 1),
            part_size=state.part_size,
            basename=state.basename,
            prefix=state.prefix,
            upload_id=state.upload_id,
        )
    except UsageError as exc:
        raise _bad_state(path, str(exc)) from exc
    return state


def find_state(
    image: str | os.PathLike[str], state_dir: str | os.PathLike[str] | None
) -> tuple[Path, UploadState] | None:
    for path in candidate_paths(image, state_dir):
        if path.exists():
            return path, read_state(path)
    return None
