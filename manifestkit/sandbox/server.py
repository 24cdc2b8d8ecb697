"""The sandbox server: moto's S3 and EC2 behind SigV4 checks, plus a hook for the import endpoint.

One threaded werkzeug server on one loopback port serves both services; a request goes to S3 or
EC2 by the service in its SigV4 credential scope (``.../us-east-1/s3/aws4_request`` or
``.../ec2/...``), and an unsigned request is EC2 when it carries an ``Action`` parameter, S3
otherwise. Presigned S3 URLs are path style on 127.0.0.1
(``http://127.0.0.1:PORT/bucket/key?X-Amz-...``), so ``s3_endpoint_url == ec2_endpoint_url``;
clients use ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL_EC2`` as usual.

Middleware chain, per request::

    /__sandbox__/...  control endpoints (clock, health) ─ answered here, no auth (loopback only)
    SigV4 check       parse + verify (s3auth.py) against the sandbox credentials and clock;
                      refusals are answered in the service's own error format
                      (S3: <Error><Code>..., EC2: <Response><Errors><Error>...); for S3 also
                      the scope's region against the bucket's (400, <Region> names the right one)
    EC2 import hook   Action in IMPORT_ACTIONS → manifestkit.sandbox.importer.handle(environ, ctx)
    moto              S3 / EC2 backends (any other signed service: moto's own dispatcher)

Unsigned requests are refused (S3: 403 AccessDenied; EC2: 401 AuthFailure): buckets are private.

The import hook contract (for ``manifestkit/sandbox/importer.py``)
------------------------------------------------------------------
``importer.handle(environ: dict, context: SandboxContext) -> tuple[int, list[tuple[str, str]],
bytes] | None`` is called, in the request's server thread, for an EC2 Query request whose
``Action`` is ImportInstance, ImportVolume, DescribeConversionTasks or CancelConversionTask, after
its signature has been verified. Return ``(status, headers, body)`` to answer (status an int such
as 200 or 400; headers without Content-Length, which is added), or None to let moto answer. The
module is imported lazily on the first such request; when it does not exist the sandbox answers
501 NotImplemented in EC2's error format. Exceptions escaping ``handle`` become 500 InternalError.
In ``environ``:

* ``environ[ENV_PARAMS]`` (``"manifestkit.sandbox.params"``): ``dict[str, str]``, the Query
  parameters (URL query merged with the form body; body wins), e.g. ``"Action"``,
  ``"DiskImage.1.Image.Format"``, ``"LaunchSpecification.InstanceType"``, ``"DryRun"``;
* ``environ[ENV_AUTH]`` (``"manifestkit.sandbox.auth"``): the verified ``s3auth.AuthResult``
  (``access_key``, ``account_id``, ``region`` from the credential scope — the EC2 region of the
  call —, ``service``, ``signed_at``);
* ``environ["wsgi.input"]`` is a fresh ``io.BytesIO`` of the body (already read for the check).

Helpers for answering: ``ec2_error(code, message, status)`` returns such a tuple in EC2's error
format, and ``new_request_id()`` makes a RequestId.

``SandboxContext`` (one per running sandbox, same object for every call) gives the importer:

* ``clock`` (SandboxClock): the sandbox time; time task expiry and waits with it;
* ``region``: the sandbox's default region (requests say their own in ``ENV_AUTH``);
* ``credentials``: read-only live mapping access key → ``s3auth.Credential``; ``access_key`` and
  ``secret_key``: the primary pair, for calls the importer makes itself;
* ``s3_endpoint_url`` / ``ec2_endpoint_url``: this server (fetch manifests and parts over real HTTP
  through their presigned URLs with urllib/http.client — the same path the real importer takes, and
  the SigV4 checks apply);
* ``account_id``: the primary credential's moto account (123456789012 by default);
* ``ec2_backend(region, account_id=None)`` / ``s3_backend(account_id=None)``: moto's backend
  objects, e.g. ``ec2_backend("us-east-1").run_instances(...)`` / ``.create_volume(...)`` so the
  instance or volume a completed task names shows up in DescribeInstances / DescribeVolumes;
* ``submit(fn, *args, **kwargs) -> Future``: run a background task (conversion) on the sandbox's
  thread pool; ``stopping`` (threading.Event) is set when the sandbox stops — long tasks check it
  and return; pending tasks are cancelled at stop;
* ``state`` (dict) guarded by ``lock`` (RLock): the importer's own storage for conversion tasks,
  kept for the sandbox's lifetime; ``shared(key, make)``: the one object ``key`` names there,
  made on first use;
* ``signed_for(environ)``: the (region, account id) the request was signed for;
* ``aws_settings()``: an ``AwsSettings`` for boto3 clients pointed at this sandbox.

Note: moto keeps its backends in process-wide globals. Two sandboxes in one process share buckets
and instances, and moto's ``mock_aws`` (which resets every backend) must not run in a process that
hosts a sandbox other tests still use.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from manifestkit.aws import AwsSettings
from manifestkit.errors import RemoteError, UsageError
from manifestkit.sandbox.clock import SandboxClock
from manifestkit.sandbox.s3auth import (
    AuthError,
    AuthResult,
    Credential,
    Failure,
    ParsedAuth,
    credential_error_prefix,
    parse_auth,
    verify,
)

log = logging.getLogger("manifestkit.sandbox")

DEFAULT_ACCOUNT_ID = "123456789012"
#: the EC2 actions the import endpoint (manifestkit.sandbox.importer) answers
IMPORT_ACTIONS = frozenset(
    {"ImportInstance", "ImportVolume", "DescribeConversionTasks", "CancelConversionTask"}
)
CONTROL_PREFIX = "/__sandbox__/"
ENV_PARAMS = "manifestkit.sandbox.params"
ENV_AUTH = "manifestkit.sandbox.auth"
IMPORTER_MODULE = "manifestkit.sandbox.importer"
#: the AMI chain's calls moto does not do as EC2 does (manifestkit.sandbox.images; same contract
#: as the import hook: (status, headers, body) to answer, None to let moto answer)
IMAGE_ACTIONS = frozenset(
    {
        "CreateSnapshot",
        "RegisterImage",
        "CopyImage",
        "ModifyImageAttribute",
        "ModifySnapshotAttribute",
        "DeleteVolume",
        "DeleteSnapshot",
        "DeregisterImage",
        "CreateTags",
    }
)

Response = tuple[int, list[tuple[str, str]], bytes]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def new_request_id() -> str:
    return uuid.uuid4().hex[:16].upper()


def _with_request_id(start_response: StartResponse) -> StartResponse:
    def wrapped(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
        if not any(name.lower() == "x-amz-request-id" for name, _ in headers):
            headers = [*headers, ("x-amz-request-id", new_request_id())]
        return start_response(status, headers, *rest)

    return wrapped  # type: ignore[return-value]


def s3_error(
    code: str, message: str, status: int, details: Iterable[tuple[str, str]] = ()
) -> Response:
    """An S3 error document (S3 API Reference, "Error responses")."""
    request_id = new_request_id()
    extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in details)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>sandbox</HostId></Error>"
    ).encode()
    return status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], body


def ec2_error(code: str, message: str, status: int = 400) -> Response:
    """An EC2 Query error document (EC2 API Reference, "Error codes")."""
    request_id = str(uuid.uuid4())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()
    return status, [("Content-Type", "text/xml;charset=UTF-8")], body


# S3 answers for each refusal (S3 API Reference, "List of error codes").
_S3_FAILURES: dict[Failure, tuple[str, int]] = {
    Failure.TWO_MECHANISMS: ("InvalidArgument", 400),
    Failure.UNSUPPORTED: ("InvalidRequest", 400),
    Failure.MALFORMED: ("AuthorizationQueryParametersError", 400),
    Failure.EXPIRES_TOO_LONG: ("AuthorizationQueryParametersError", 400),
    Failure.UNKNOWN_KEY: ("InvalidAccessKeyId", 403),
    Failure.EXPIRED: ("AccessDenied", 403),
    Failure.NOT_YET_VALID: ("AccessDenied", 403),
    Failure.SKEWED: ("RequestTimeTooSkewed", 403),
    Failure.SIGNATURE: ("SignatureDoesNotMatch", 403),
    Failure.MISSING_CONTENT_SHA256: ("InvalidRequest", 400),
}

# EC2 answers (EC2 API Reference, "Common client error codes").
_EC2_FAILURES: dict[Failure, tuple[str, int, str | None]] = {
    Failure.TWO_MECHANISMS: ("InvalidParameterCombination", 400, None),
    Failure.UNSUPPORTED: ("AuthFailure", 401, None),
    Failure.MALFORMED: ("IncompleteSignature", 400, None),
    Failure.EXPIRES_TOO_LONG: ("IncompleteSignature", 400, None),
    Failure.UNKNOWN_KEY: (
        "AuthFailure",
        401,
        "AWS was not able to validate the provided access credentials",
    ),
    Failure.EXPIRED: ("RequestExpired", 400, "Request has expired."),
    Failure.NOT_YET_VALID: ("AuthFailure", 401, "Request is not valid yet."),
    Failure.SKEWED: ("RequestExpired", 400, "Request has expired."),
    Failure.SIGNATURE: (
        "SignatureDoesNotMatch",
        403,
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method. Consult the service documentation for "
        "details.",
    ),
    Failure.MISSING_CONTENT_SHA256: ("IncompleteSignature", 400, None),
}


def _s3_refusal(error: AuthError) -> Response:
    code, status = _S3_FAILURES[error.failure]
    if error.failure is Failure.MALFORMED and not error.query_auth:
        code = "AuthorizationHeaderMalformed"
    return s3_error(code, error.message, status, error.details)


def _ec2_refusal(error: AuthError) -> Response:
    code, status, message = _EC2_FAILURES[error.failure]
    return ec2_error(code, message or error.message, status)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _aws_settings(where: SandboxContext | Sandbox) -> AwsSettings:
    """Settings for boto3 clients pointed at a sandbox (path style: its host is an IP); isolated
    from the user's AWS configuration (a profile in AWS_PROFILE must not break an offline run)."""
    return AwsSettings(
        region=where.region,
        s3_endpoint_url=where.s3_endpoint_url,
        ec2_endpoint_url=where.ec2_endpoint_url,
        access_key=where.access_key,
        secret_key=where.secret_key,
        addressing_style="path",
        isolated=True,
    )


@dataclass(frozen=True)
class SandboxContext:
    """What the EC2 import endpoint gets from the sandbox (see the module docstring)."""

    clock: SandboxClock
    region: str
    credentials: Mapping[str, Credential]
    access_key: str
    secret_key: str = field(repr=False)
    account_id: str
    s3_endpoint_url: str
    ec2_endpoint_url: str
    executor: ThreadPoolExecutor = field(repr=False)
    stopping: threading.Event = field(repr=False)
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.executor.submit(fn, *args, **kwargs)

    def signed_for(self, environ: Mapping[str, Any]) -> tuple[str, str]:
        """The region and account of the request's verified signature (the sandbox's own when
        the request carries none)."""
        auth = environ.get(ENV_AUTH)
        region = getattr(auth, "region", None) or self.region
        account_id = getattr(auth, "account_id", None) or self.account_id
        return str(region), str(account_id)

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """The one object ``key`` names in this sandbox, made by ``make`` on first use."""
        with self.lock:
            if key not in self.state:
                self.state[key] = make()
            return self.state[key]

    def ec2_backend(self, region: str | None = None, account_id: str | None = None) -> Any:
        """moto's EC2Backend for the region (default: the sandbox's) and account."""
        from moto.ec2.models import ec2_backends

        return ec2_backends[account_id or self.account_id][region or self.region]

    def s3_backend(self, account_id: str | None = None) -> Any:
        """moto's S3Backend (one per account; buckets keep their own region)."""
        from moto.s3.models import s3_backends

        return s3_backends[account_id or self.account_id]["aws"]

    def aws_settings(self) -> AwsSettings:
        return _aws_settings(self)


class SandboxApp:
    """The WSGI application: control endpoints, SigV4 checks, the import hook, then moto."""

    def __init__(self, context: SandboxContext, clock: SandboxClock) -> None:
        self._context = context
        self._clock = clock
        self._apps: dict[str, WsgiApp] = {}
        self._apps_lock = threading.Lock()

    # moto's Flask apps are built once, on first use (EC2's takes about a second).
    def _moto_app(self, service: str) -> WsgiApp:
        app = self._apps.get(service)
        if app is None:
            with self._apps_lock:
                app = self._apps.get(service)
                if app is None:
                    from moto.moto_server.werkzeug_app import (
                        DomainDispatcherApplication,
                        create_backend_app,
                    )

                    if service in ("s3", "ec2"):
                        app = create_backend_app(service)
                    else:
                        app = DomainDispatcherApplication(create_backend_app)
                    self._apps[service] = app
        return app

    def _call_moto(
        self, service: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """moto's answer; a moto crash becomes the service's own error instead of an HTML page.

        Every S3 answer carries ``x-amz-request-id`` as S3's do (moto leaves it out of some,
        e.g. DeleteObject's 204), since clients tell S3 from a web server by it."""
        if service == "s3":
            start_response = _with_request_id(start_response)
        try:
            return self._moto_app(service)(environ, start_response)
        except Exception as exc:  # noqa: BLE001 - answer in the service's format, keep serving
            log.debug("moto failed on %s %s", service, environ.get("PATH_INFO"), exc_info=True)
            unsupported = isinstance(exc, NotImplementedError)
            status = 501 if unsupported else 500
            code = "NotImplemented" if unsupported else "InternalError"
            message = f"the sandbox (moto) cannot do this: {type(exc).__name__}: {exc}"
            if service == "s3":
                answer = s3_error(code, message, status)
            else:
                answer = ec2_error(code, message, status)
            return self._answer(environ, start_response, answer)

    def warm_up(self, services: Iterable[str] = ("s3",)) -> None:
        for service in services:
            self._moto_app(service)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._answer(environ, start_response, self._control(environ))
        try:
            parsed = parse_auth(environ)
        except AuthError as error:
            if self._looks_like_ec2(environ):
                return self._answer(environ, start_response, _ec2_refusal(error))
            return self._answer(environ, start_response, _s3_refusal(error))
        if parsed is None:
            if self._looks_like_ec2(environ):
                return self._answer(
                    environ,
                    start_response,
                    ec2_error("AuthFailure", "The request must be signed (AWS Signature V4).", 401),
                )
            return self._answer(
                environ, start_response, s3_error("AccessDenied", "Access Denied", 403)
            )
        if parsed.service == "s3":
            return self._s3(environ, start_response, parsed)
        return self._query_service(environ, start_response, parsed)

    def _verify(
        self, environ: dict[str, Any], parsed: ParsedAuth, body_sha256: Callable[[], str]
    ) -> AuthResult:
        """The request's signature checked against the sandbox's keys at the sandbox's time."""
        return verify(
            environ,
            parsed,
            self._context.credentials,
            self._clock.now(),
            body_sha256=body_sha256,
        )

    # ------------------------------------------------------------------ S3

    def _s3(
        self, environ: dict[str, Any], start_response: StartResponse, parsed: ParsedAuth
    ) -> Iterable[bytes]:
        try:
            result = self._verify(environ, parsed, lambda: _hash_body(environ))
        except AuthError as error:
            return self._answer(environ, start_response, _s3_refusal(error))
        wrong_region = self._wrong_region(environ, result)
        if wrong_region is not None:
            return self._answer(environ, start_response, wrong_region)
        environ[ENV_AUTH] = result
        # moto takes the account from this header; presigned requests would otherwise all land
        # in its default account.
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = result.account_id
        if environ.get("REQUEST_METHOD") == "PUT" and environ.get("CONTENT_TYPE", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            # S3 stores a PUT body whatever its type, but Flask would parse this one as a form
            # and moto would store nothing (urllib and `curl --data` send this type by default).
            environ["CONTENT_TYPE"] = "binary/octet-stream"
        return self._call_moto("s3", environ, start_response)

    def _wrong_region(self, environ: dict[str, Any], result: AuthResult) -> Response | None:
        """S3's refusal of a request signed for another region than its bucket's, or None.

        S3 checks the credential scope's region against the bucket's (moto does not); botocore
        follows the header-auth answer's <Region> to retry in the right region, and a presigned
        URL signed for the wrong region simply fails — as it would at AWS. GetBucketLocation is
        answered from any region.
        """
        bucket_name = environ.get("PATH_INFO", "/").lstrip("/").partition("/")[0]
        if not bucket_name or "location" in environ.get("QUERY_STRING", "").split("&"):
            return None
        bucket = self._context.s3_backend(result.account_id).buckets.get(bucket_name)
        region = getattr(bucket, "region_name", None)
        if region is None or region == result.region:
            return None
        code = (
            "AuthorizationQueryParametersError"
            if result.query_auth
            else "AuthorizationHeaderMalformed"
        )
        status, headers, body = s3_error(
            code,
            f"{credential_error_prefix(result.query_auth)}; the region '{result.region}' is "
            f"wrong; expecting '{region}'",
            400,
            (("Region", region),),
        )
        return status, [*headers, ("x-amz-bucket-region", region)], body

    # ------------------------------------------------------------------ EC2 and others

    def _query_service(
        self, environ: dict[str, Any], start_response: StartResponse, parsed: ParsedAuth
    ) -> Iterable[bytes]:
        body = _read_body(environ)
        try:
            result = self._verify(environ, parsed, lambda: hashlib.sha256(body).hexdigest())
        except AuthError as error:
            if parsed.service == "ec2":
                return self._answer(environ, start_response, _ec2_refusal(error))
            return self._answer(environ, start_response, _s3_refusal(error))
        environ[ENV_AUTH] = result
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = result.account_id
        if parsed.service != "ec2":
            return self._call_moto(parsed.service, environ, start_response)
        params = _query_params(environ, body)
        environ[ENV_PARAMS] = params
        if params.get("Action") in IMPORT_ACTIONS:
            answer = self._import_hook(environ)
            if answer is not None:
                return self._answer(environ, start_response, answer)
        if params.get("Action") in IMAGE_ACTIONS:
            from manifestkit.sandbox import images

            answer = images.handle(environ, self._context)
            if answer is not None:
                return self._answer(environ, start_response, answer)
        return self._call_moto("ec2", environ, start_response)

    def _import_hook(self, environ: dict[str, Any]) -> Response | None:
        import importlib

        try:
            importer = importlib.import_module(IMPORTER_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != IMPORTER_MODULE:
                raise
            action = environ[ENV_PARAMS].get("Action", "")
            return ec2_error(
                "NotImplemented", f"{action} is not available in this sandbox build.", 501
            )
        try:
            answer = importer.handle(environ, self._context)
        except Exception as exc:  # noqa: BLE001 - a bug in the endpoint must not kill the server
            log.exception("import endpoint failed")
            return ec2_error("InternalError", f"sandbox import endpoint failed: {exc}", 500)
        if answer is None:
            return None
        status, headers, body = answer
        if isinstance(status, str):  # "200 OK" is accepted too
            status = int(status.split(None, 1)[0])
        return int(status), list(headers), bytes(body)

    @staticmethod
    def _looks_like_ec2(environ: dict[str, Any]) -> bool:
        if "Action=" in environ.get("QUERY_STRING", ""):
            return True
        content_type = environ.get("CONTENT_TYPE", "")
        if environ.get("REQUEST_METHOD") == "POST" and content_type.startswith(
            "application/x-www-form-urlencoded"
        ):
            body = _read_body(environ)
            return b"Action=" in body
        return False

    # ------------------------------------------------------------------ control

    def _control(self, environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == CONTROL_PREFIX + "health":
            return _json(200, self._health())
        if path != CONTROL_PREFIX + "clock":
            return _json(404, {"error": f"no control endpoint {path}"})
        if method == "POST":
            try:
                request = json.loads(_read_body(environ) or b"{}")
                self._apply_clock(request)
            except (ValueError, TypeError) as exc:
                return _json(
                    400,
                    {
                        "error": f"bad clock request: {exc}",
                        "expected": '{"advance": SECONDS} | {"set": "ISO-8601"} | {"reset": true}',
                    },
                )
        elif method != "GET":
            return _json(405, {"error": "use GET or POST"})
        return _json(200, self._clock_state())

    def _apply_clock(self, request: Any) -> None:
        if not isinstance(request, dict) or len(request) != 1:
            raise ValueError("give exactly one of advance, set, reset")
        ((name, value),) = request.items()
        if name == "advance" and isinstance(value, (int, float)) and not isinstance(value, bool):
            self._clock.advance(float(value))
        elif name == "set" and isinstance(value, str):
            self._clock.set(datetime.fromisoformat(value.replace("Z", "+00:00")))
        elif name == "reset" and value is True:
            self._clock.reset()
        else:
            raise ValueError(f"unknown or mistyped field {name!r}")

    def _clock_state(self) -> dict[str, Any]:
        return {
            "now": self._clock.now().isoformat(),
            "offset_seconds": self._clock.offset_seconds,
        }

    def _health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "region": self._context.region,
            "s3_endpoint_url": self._context.s3_endpoint_url,
            "ec2_endpoint_url": self._context.ec2_endpoint_url,
            **self._clock_state(),
        }

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _answer(
        environ: dict[str, Any], start_response: StartResponse, response: Response
    ) -> Iterable[bytes]:
        status, headers, body = response
        if environ.get("REQUEST_METHOD") == "HEAD":
            body = b""
        start_response(_status_line(status), [*headers, ("Content-Length", str(len(body)))])
        return [body]


def _json(status: int, document: Any) -> Response:
    return status, [("Content-Type", "application/json")], json.dumps(document).encode()


def _read_body(environ: dict[str, Any]) -> bytes:
    """The whole (small: EC2 Query, control) body; wsgi.input is replaced to be read again."""
    cached = environ.get("manifestkit.sandbox.body")
    if cached is not None:
        return cached
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked transfer: werkzeug ends the stream
        body = stream.read()
    else:
        body = b""
    environ["manifestkit.sandbox.body"] = body
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _hash_body(environ: dict[str, Any]) -> str:
    return hashlib.sha256(_read_body(environ)).hexdigest()


def _query_params(environ: dict[str, Any], body: bytes) -> dict[str, str]:
    params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


# ---------------------------------------------------------------------- the server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


class Sandbox:
    """A running sandbox (S3 + EC2 on one loopback port) in a background thread.

    ``with Sandbox() as sandbox: boto3.client("s3", **...)`` — or ``start()`` / ``stop()``. The
    default credentials are the throwaway pair ``testing``/``testing``; more can be accepted with
    ``credentials=[Credential(...)]`` or ``add_credential``.
    """

    def __init__(
        self,
        region: str = "us-east-1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key: str = "testing",
        secret_key: str = "testing",
        account_id: str = DEFAULT_ACCOUNT_ID,
        credentials: Iterable[Credential] = (),
        clock: SandboxClock | None = None,
        allow_remote: bool = False,
        workers: int = 8,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise UsageError(
                f"refusing to serve the sandbox on {host}: it accepts throwaway credentials",
                fix="use a loopback address such as 127.0.0.1",
            )
        self.region = region
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self.account_id = account_id
        self.clock = clock or SandboxClock()
        self._requested_port = port
        self._workers = workers
        self._credentials: dict[str, Credential] = {
            access_key: Credential(access_key, secret_key, account_id)
        }
        for credential in credentials:
            self._credentials[credential.access_key] = credential
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self.context: SandboxContext | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        try:
            from werkzeug.serving import WSGIRequestHandler, make_server
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise UsageError(
                "the sandbox needs moto's server extras",
                fix="pip install 'manifestkit[sandbox]'",
            ) from exc

        class QuietHandler(WSGIRequestHandler):
            """No access log on stderr: the library never prints."""

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

            def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
                log.debug("sandbox http %s: " + message, type, *args)

        self._stopping.clear()
        # moto loads its catalogue of public AMIs (thousands, seconds per region) into every
        # region's backend on first use; a sandbox account starts empty, as a new account's own
        # images do (MOTO_EC2_LOAD_DEFAULT_AMIS=true brings them back)
        os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        self._executor = ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="sandbox-task"
        )
        # the app needs the URL, the URL needs the bound port: bind first, then attach the app
        holder: dict[str, Any] = {}

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            return holder["app"](environ, start_response)

        # Bind here: werkzeug prints and calls sys.exit(1) when its own bind fails.
        try:
            listener = _listen(self.host, self._requested_port)
        except OSError as exc:
            self._executor.shutdown(wait=False)
            raise UsageError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}",
                fix="pick another --port (or omit it for a free one)",
            ) from exc
        with listener:
            self._server = make_server(
                self.host,
                listener.getsockname()[1],
                app,
                threaded=True,
                request_handler=QuietHandler,
                fd=listener.fileno(),
            )
        # werkzeug reports a crashed request through its own logger; keep it off stderr
        self._server.log = lambda type_, message, *args: log.debug(
            "sandbox http %s: " + message, type_, *args
        )
        url = self._url()
        self.context = SandboxContext(
            clock=self.clock,
            region=self.region,
            credentials=MappingProxyType(self._credentials),
            access_key=self.access_key,
            secret_key=self.secret_key,
            account_id=self.account_id,
            s3_endpoint_url=url,
            ec2_endpoint_url=url,
            executor=self._executor,
            stopping=self._stopping,
        )
        sandbox_app = SandboxApp(self.context, self.clock)
        try:
            sandbox_app.warm_up(("s3",))
        except ImportError as exc:
            self._server.server_close()
            self._server = None
            raise UsageError(
                f"the sandbox needs moto[server]: {exc}", fix="pip install 'manifestkit[sandbox]'"
            ) from exc
        holder["app"] = sandbox_app
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="manifestkit-sandbox",
            daemon=True,
        )
        self._thread.start()
        log.debug("sandbox listening on %s", url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._server = None
        self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ where and how to reach it

    @property
    def port(self) -> int:
        if self._server is None:
            raise RemoteError("the sandbox is not running", fix="start() it first")
        return int(self._server.server_address[1])

    def _url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # a wildcard bind is still reached (and signed for) on loopback
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return self._url()

    @property
    def s3_endpoint_url(self) -> str:
        return self._url()

    @property
    def ec2_endpoint_url(self) -> str:
        return self._url()

    @property
    def control_url(self) -> str:
        """Base of the control endpoints: ``POST {control_url}clock`` with ``{"advance": 3600}``."""
        return self._url() + CONTROL_PREFIX

    @property
    def credentials(self) -> Mapping[str, Credential]:
        return MappingProxyType(self._credentials)

    def add_credential(
        self, access_key: str, secret_key: str, account_id: str | None = None
    ) -> Credential:
        """Accept another access key (e.g. a second account, for bucket-owner tests)."""
        credential = Credential(access_key, secret_key, account_id or self.account_id)
        self._credentials[access_key] = credential
        return credential

    def aws_settings(self) -> AwsSettings:
        return _aws_settings(self)

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and the AWS CLI) at this sandbox."""
        return {
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint_url,
            "AWS_ENDPOINT_URL_EC2": self.ec2_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __repr__(self) -> str:
        state = self._url() if self._server is not None else "stopped"
        return f"Sandbox(region={self.region!r}, {state})"


def start_sandbox(region: str = "us-east-1", **options: Any) -> Sandbox:
    """A started Sandbox (also a context manager: ``with start_sandbox() as sandbox: ...``)."""
    return Sandbox(region, **options).start()
