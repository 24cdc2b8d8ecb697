"""End-to-end steps composed from the modules; what the CLI and library users call.

The steps live in this folder, one module each, and every public name is importable from here::

    from manifestkit.workflow import ImportInstanceRequest, LaunchSpec, UploadRequest, WaitSettings
    from manifestkit.workflow import import_instance

- ``upload``: image -> bucket -> verified parts -> manifest -> its presigned URL
  (``upload_image``); ``resume`` continues one (``resume_upload``, ``upload_image`` with
  ``resume=True``); ``upload_record`` owns its local record (``upload_state`` is the file).
- ``import_``: an upload (or a manifest URL) -> ImportInstance / ImportVolume -> waiting for the
  conversion task (``import_instance``, ``import_volume``).
- ``ami``: an image -> upload -> ImportVolume -> snapshot -> RegisterImage -> copies and sharing,
  continued from its journal (``ami_journal``) when stopped (``import_ami``).
- ``verify`` / ``delete``: the importer's view of an upload, and its cleanup; ``manifest_source``
  reads a manifest from a file or a URL for them.
"""

from __future__ import annotations

from manifestkit.ec2 import ConversionTask, LaunchSpec, WaitSettings
from manifestkit.workflow.ami import AmiRequest, AmiResult, RegionImage, import_ami
from manifestkit.workflow.import_ import (
    ConversionTaskFailed,
    ImportInstanceRequest,
    ImportVolumeRequest,
    check_import_instance,
    check_import_volume,
    import_instance,
    import_volume,
)
from manifestkit.workflow.resume import resume_upload
from manifestkit.workflow.upload import UploadRequest, UploadResult, upload_image

__all__ = [
    "AmiRequest",
    "AmiResult",
    "ConversionTask",
    "ConversionTaskFailed",
    "ImportInstanceRequest",
    "ImportVolumeRequest",
    "LaunchSpec",
    "RegionImage",
    "UploadRequest",
    "UploadResult",
    "WaitSettings",
    "check_import_instance",
    "check_import_volume",
    "import_ami",
    "import_instance",
    "import_volume",
    "resume_upload",
    "upload_image",
]
