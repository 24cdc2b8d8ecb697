"""S3 bucket-name rules, checked before anything is signed or uploaded.

The rules are S3's "general purpose bucket naming rules"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html): 3-63 characters,
lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit, no two
adjacent dots, not formatted like an IPv4 address, none of the reserved prefixes or suffixes.
"""

from __future__ import annotations

import logging
import re

from manifestkit.errors import UsageError

log = logging.getLogger("manifestkit")

_CHARS = re.compile(r"^[a-z0-9.\-]+$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse ``name`` as a bucket name, or ``None`` when it is acceptable."""
    if not 3 <= len(name) <= 63:
        unit = "character" if len(name) == 1 else "characters"
        return f"is {len(name)} {unit} long; S3 bucket names are 3 to 63 characters"
    if not _CHARS.match(name):
        return "may contain only lowercase letters, digits, dots (.) and hyphens (-)"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "must begin and end with a letter or digit"
    if ".." in name:
        return "must not contain two adjacent dots"
    if ".-" in name or "-." in name:
        return "must not have a dot next to a hyphen"
    if _IPV4.match(name):
        return "must not be formatted as an IP address"
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"must not start with the reserved prefix {prefix!r}"
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"must not end with the reserved suffix {suffix!r}"
    return None


def validate_bucket_name(name: str, *, warn_dots: bool = True) -> str:
    """Return ``name`` when S3 accepts it; raise ``UsageError`` naming the broken rule otherwise.

    Dots are legal but a dotted name cannot be addressed virtual-hosted over HTTPS (the wildcard
    certificate ``*.s3.<region>.amazonaws.com`` covers one label only), so URLs fall back to path
    style; ``warn_dots`` logs that.
    """
    problem = bucket_name_problem(name)
    if problem is not None:
        raise UsageError(
            f"invalid bucket name {name!r}: it {problem}",
            fix="choose a name S3 accepts (see the S3 bucket naming rules)",
        )
    if warn_dots and "." in name:
        log.warning(
            "bucket name %r contains dots: virtual-hosted HTTPS URLs would fail the TLS "
            "certificate check, so path-style URLs are used",
            name,
        )
    return name
