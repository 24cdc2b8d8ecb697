"""Where a URL from a manifest, the command line or a redirect may point (SECURITY.md).

A manifest is data anybody can write and host, so every URL in it is untrusted. Allowed:

* ``https`` on a host name under an AWS partition's DNS suffix (``amazonaws.com``,
  ``amazonaws.com.cn``, ``amazonaws.eu``, ``c2s.ic.gov``, ... read from botocore's own partition
  data, so a new partition needs no change here);
* exactly the S3 endpoint the user configured (``--s3-endpoint-url``, ``AWS_ENDPOINT_URL_S3``,
  ``AWS_ENDPOINT_URL``, a profile's ``endpoint_url``, ``--local``'s sandbox): same scheme, host
  and port (a virtual-hosted ``bucket.`` in front of a configured host *name* is the same
  endpoint).

Everything else is refused before a byte is sent: IP literals that are not the configured
endpoint (AWS endpoints are names), another loopback port, the instance metadata service
(169.254.169.254, fd00:ec2::254), other schemes. ``check_peer`` refuses a connection to a
loopback, link-local or private address that a *name* resolved to, unless it is the configured
endpoint (DNS that an attacker controls cannot turn an allowed name into the metadata service).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from manifestkit.errors import UsageError


class UrlRefused(UsageError):
    """A URL outside the trust boundary (exit 2): nothing was sent to it."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint | None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname.lower().rstrip("."), port or default)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@functools.lru_cache(maxsize=1)
def aws_dns_suffixes() -> tuple[str, ...]:
    """Every AWS partition's DNS suffixes, as botocore knows them (partitions.json)."""
    import botocore.loaders

    suffixes: set[str] = {"amazonaws.com", "amazonaws.com.cn"}
    data = botocore.loaders.create_loader().load_data("partitions")
    for partition in data.get("partitions", ()):
        outputs = partition.get("outputs", {})
        for name in ("dnsSuffix", "dualStackDnsSuffix"):
            value = outputs.get(name)
            if isinstance(value, str) and value:
                suffixes.add(value.lower())
    return tuple(sorted(suffixes))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def internal_address(address: str) -> bool:
    """Loopback, link-local (instance metadata), private, or otherwise not a public address."""
    ip = _ip(address.split("%", 1)[0])
    if ip is None:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class UrlPolicy:
    #: the endpoints the user configured (trusted whatever their address)
    configured: tuple[Endpoint, ...] = ()
    #: DNS suffixes whose https hosts are AWS's (default: botocore's partitions)
    aws_suffixes: tuple[str, ...] | None = None

    def _suffixes(self) -> tuple[str, ...]:
        return self.aws_suffixes if self.aws_suffixes is not None else aws_dns_suffixes()

    def configured_for(self, endpoint: Endpoint) -> bool:
        for mine in self.configured:
            if (mine.scheme, mine.port) != (endpoint.scheme, endpoint.port):
                continue
            if endpoint.host == mine.host:
                return True
            # virtual-hosted style on a configured *name* (never on an address)
            if _ip(mine.host) is None and endpoint.host.endswith("." + mine.host):
                return True
        return False

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        endpoint = Endpoint.parse(url)
        if endpoint is None:
            scheme = url.partition(":")[0] if ":" in url else ""
            if scheme and scheme.lower() not in ("http", "https"):
                return f"a {scheme}: URL (only https S3 endpoints are followed)"
            return "not an http(s) URL with a host"
        if self.configured_for(endpoint):
            return None
        where = str(endpoint)
        if _ip(endpoint.host) is not None:
            kind = (
                "the instance metadata service"
                if endpoint.host in ("169.254.169.254", "fd00:ec2::254")
                else "an IP address"
            )
            return f"{where} is {kind}, not an AWS S3 endpoint nor the configured endpoint"
        if not any(endpoint.host.endswith("." + s) for s in self._suffixes()):
            return f"{where} is neither an AWS S3 endpoint nor the configured endpoint"
        if endpoint.scheme != "https":
            return f"{where} is AWS but not https"
        return None

    def check(self, url: str, what: str = "URL") -> None:
        reason = self.problem(url)
        if reason is not None:
            raise UrlRefused(
                f"refusing the {what}: {reason}",
                fix="only https AWS endpoints and the endpoint you configured "
                "(--s3-endpoint-url, AWS_ENDPOINT_URL_S3, a profile's endpoint_url) are used",
            )

    def check_peer(self, url: str, address: str) -> None:
        """Refuse a connection a *name* opened to an internal address (see the module doc)."""
        endpoint = Endpoint.parse(url)
        if endpoint is None or self.configured_for(endpoint):
            return
        if internal_address(address):
            raise UrlRefused(
                f"refusing {endpoint}: it resolves to the internal address {address}",
                fix="configure that endpoint explicitly (--s3-endpoint-url) if it is yours",
            )

    def with_endpoint(self, url: str | None) -> UrlPolicy:
        endpoint = Endpoint.parse(url) if url else None
        if endpoint is None or endpoint in self.configured:
            return self
        return UrlPolicy((*self.configured, endpoint), self.aws_suffixes)

    @classmethod
    def from_settings(cls, settings: Any = None, *, environ: Any = None) -> UrlPolicy:
        """The endpoints ``settings`` (an ``AwsSettings``) and boto3's configuration name."""
        urls = [getattr(settings, "s3_endpoint_url", None)]
        urls.extend(configured_endpoint_urls(getattr(settings, "profile", None), environ))
        policy = cls()
        for url in urls:
            policy = policy.with_endpoint(url)
        return policy


def configured_endpoint_urls(profile: str | None = None, environ: Any = None) -> list[str]:
    """The S3 endpoint boto3 would use from the environment or the profile (none: AWS's own)."""
    env = os.environ if environ is None else environ
    urls = [env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL")]
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        urls = []
    try:
        import botocore.session
        from botocore.configprovider import ConfiguredEndpointProvider

        session = botocore.session.Session(profile=profile)
        provider = ConfiguredEndpointProvider(
            full_config=session.full_config,
            scoped_config=session.get_scoped_config(),
            client_name="s3",
            environ=env,
        )
        urls.append(provider.provide())
    except Exception:  # noqa: BLE001 - a broken profile is reported by the command that uses it
        pass
    return [u for u in urls if u]
