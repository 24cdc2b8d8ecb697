"""The manifest's parts as frozen values, and the facts every manifest shares (design.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

# re-exported: they were defined here; manifestkit.package_data keeps them light to import
from manifestkit.package_data import SAMPLE_VALID_AT, samples_path, schema_path  # noqa: F401
from manifestkit.parts import Part

#: The only manifest version ImportInstance / ImportVolume read.
MANIFEST_VERSION = "2010-11-15"
IMPORTER_NAME = "manifestkit"
#: ``importer/release``: the manifest revision written (as the EC2 API tools wrote it).
IMPORTER_RELEASE = MANIFEST_VERSION
MANIFEST_KEY_SUFFIX = "manifest.xml"


@dataclass(frozen=True)
class Importer:
    name: str
    version: str
    release: str


@dataclass(frozen=True)
class ManifestHeader:
    """Everything before the first ``part``: it is known before any part is read."""

    version: str
    file_format: str
    importer: Importer
    self_destruct_url: str
    #: image file bytes (``import/size``)
    size: int
    #: GiB (``import/volume-size``)
    volume_size: int
    #: ``parts/@count`` as written (the validator checks it against the parts)
    part_count: int


@dataclass(frozen=True)
class ManifestPart(Part):
    """A planned part (index, inclusive byte range, key) with the URLs the importer uses."""

    head_url: str
    get_url: str
    delete_url: str | None = None


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (an XPath-like path, 1-based positions), which rule, what is wrong."""

    path: str
    rule: str
    message: str
    #: ``error``: an importer will fail, the manifest is invalid; ``warning``: AWS's text says
    #: otherwise but importers in the wild accept it; ``note``: what could not be checked
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"

    def to_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "rule": self.rule,
            "message": self.message,
            "severity": self.severity,
        }
