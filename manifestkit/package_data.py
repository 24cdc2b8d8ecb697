"""Where the files shipped inside the package are (``schemas/``, ``samples/``).

Kept apart from ``manifestkit.manifest`` so that ``manifestkit --help`` can name the samples folder
without loading the manifest code (and lxml with it).
"""

from __future__ import annotations

from pathlib import Path

import manifestkit


def schema_path() -> Path:
    """The XSD shipped inside the package (``manifestkit/schemas`` is package data)."""
    return Path(manifestkit.__file__).parent / "schemas" / "vm-import-manifest.xsd"


def samples_path() -> Path:
    """The sample images and sample manifest shipped inside the package (``manifestkit/samples``
    is package data: an installed user finds them here, a checkout also has ``samples/``)."""
    return Path(manifestkit.__file__).parent / "samples"


#: the sample manifest's URLs were signed at 2026-01-01T00:00Z for 7 days (make_sample_manifest.py):
#: ``validate --at`` this instant shows it valid whatever today's date
SAMPLE_VALID_AT = "2026-01-02T00:00:00Z"
