"""Offline stand-in for AWS: moto's S3 and EC2 on loopback, behind real SigV4/expiry/method checks.

``Sandbox`` (a context manager) runs it in a background thread; ``manifestkit sandbox`` runs it in
the foreground. See ``server.py`` for the request path and the import-endpoint contract.
"""

from manifestkit.sandbox.clock import SandboxClock
from manifestkit.sandbox.s3auth import Credential
from manifestkit.sandbox.server import Sandbox, SandboxContext, start_sandbox

__all__ = ["Credential", "Sandbox", "SandboxClock", "SandboxContext", "start_sandbox"]
