"""One exception root; each leaf carries the CLI exit code (design.md §2) and a fix-it message.

The library raises these; only the CLI entry point catches them, prints one line
``manifestkit: error: <message>`` and exits with ``exit_code``.
"""

from __future__ import annotations


class ManifestkitError(Exception):
    """Root of every error manifestkit raises on purpose. Exit code 1: the operation failed."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}; {self.fix}"
        return self.message


class UsageError(ManifestkitError):
    """Bad command-line usage or option value (exit 2)."""

    exit_code = 2


class ImageError(ManifestkitError):
    """The image is missing, unreadable, truncated or malformed (exit 2)."""

    exit_code = 2


class NotImportableError(ImageError):
    """The image parses but EC2 would refuse it (exit 2); the message says how to convert it."""


class ManifestError(ManifestkitError):
    """A manifest that is not XML, not a manifest, or breaks a rule (exit 2)."""

    exit_code = 2


class CredentialsError(ManifestkitError):
    """No credentials, or credentials the service refused (exit 2: fix the configuration)."""

    exit_code = 2


class RemoteError(ManifestkitError):
    """S3 or EC2 answered with an error, or could not be reached (exit 1)."""

    exit_code = 1


class UploadError(RemoteError):
    """A part could not be uploaded or verified after all retries (exit 1)."""


class InUseError(ManifestkitError):
    """Another manifestkit process is working on the same upload (exit 1: nothing is wrong with
    the input; the same command works once that process ends)."""

    exit_code = 1


class TaskFailed(RemoteError):
    """A conversion task ended cancelled or failed (exit 1)."""


class ConversionError(ManifestkitError):
    """An image could not be converted (exit 2: the input is at fault)."""

    exit_code = 2
