"""End-to-end steps composed from the modules; what the CLI and library users call.

Two halves, each in its own module, both importable from here::

    from manifestkit.workflow import ImportInstanceRequest, LaunchSpec, UploadRequest, WaitSettings
    from manifestkit.workflow import import_instance

- ``manifestkit.uploading``: image -> bucket -> verified parts -> manifest -> its presigned URL
  (``upload_image``, ``resume_upload``).
- ``manifestkit.importing``: an upload (or a manifest URL) -> ImportInstance / ImportVolume ->
  waiting for the conversion task (``import_instance``, ``import_volume``).
"""

from __future__ import annotations

from manifestkit.ec2 import ConversionTask, LaunchSpec, WaitSettings
from manifestkit.importing import (
    ConversionTaskFailed,
    ImportInstanceRequest,
    ImportVolumeRequest,
    check_import_instance,
    check_import_volume,
    import_instance,
    import_volume,
)
from manifestkit.uploading import UploadRequest, UploadResult, resume_upload, upload_image

__all__ = [
    "ConversionTask",
    "ConversionTaskFailed",
    "ImportInstanceRequest",
    "ImportVolumeRequest",
    "LaunchSpec",
    "UploadRequest",
    "UploadResult",
    "WaitSettings",
    "check_import_instance",
    "check_import_volume",
    "import_instance",
    "import_volume",
    "resume_upload",
    "upload_image",
]
