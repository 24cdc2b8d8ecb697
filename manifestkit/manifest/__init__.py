"""The VM Import Manifest: streaming builder, safe streaming parser, validator (design.md §4)."""

from manifestkit.manifest.build import build_manifest_file, check_volume_gib, write_manifest
from manifestkit.manifest.model import (
    IMPORTER_NAME,
    MANIFEST_VERSION,
    Importer,
    ManifestHeader,
    ManifestPart,
    Problem,
    schema_path,
)
from manifestkit.manifest.parse import iter_manifest, read_manifest
from manifestkit.manifest.validate import check_manifest, errors_only, validate_manifest

__all__ = [
    "IMPORTER_NAME",
    "MANIFEST_VERSION",
    "Importer",
    "ManifestHeader",
    "ManifestPart",
    "Problem",
    "build_manifest_file",
    "check_manifest",
    "check_volume_gib",
    "errors_only",
    "iter_manifest",
    "read_manifest",
    "schema_path",
    "validate_manifest",
    "write_manifest",
]
