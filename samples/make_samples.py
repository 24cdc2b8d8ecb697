#!/usr/bin/env python3
"""Regenerate the tiny sample images in this folder, byte for byte.

    python samples/make_samples.py [OUTDIR]     # default: this folder

- ``tiny.raw``: 32 KiB RAW disk with recognisable text and a byte pattern.
- ``tiny-stream.vmdk``: 3 MiB (+ 12345 bytes, rounded up to a sector by qemu-img) streamOptimized
  VMDK made by ``qemu-img convert`` from a RAW with the same text at 0 and a byte pattern at 2 MiB.
- ``tiny-dynamic.vhd``: 4 MiB dynamic VHD made by ``qemu-img create -f vpc`` (no blocks allocated:
  one 2 MiB block would make the file 2 MiB).

qemu-img writes a random CID into the VMDK descriptor and a timestamp and random UUID into the VHD
footer; this script replaces them with fixed values (and recomputes the VHD checksums) so the output
is the same on every run. Needs qemu-img (apt-get install qemu-utils).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

MiB = 1024 * 1024
BANNER = b"manifestkit sample disk: if you can read this, the grains inflated correctly.\n"
FIXED_CID = b"CID=4d4b4954"  # "MKIT"
FIXED_UUID = bytes.fromhex("6d616e69666573746b69742073616d70")  # "manifestkit samp"


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def make_raw(path: str) -> None:
    body = BANNER * 64 + pattern(8 * 1024)
    with open(path, "wb") as f:
        f.write(body.ljust(32 * 1024, b"\0"))


def make_stream(path: str, work: str) -> None:
    source = os.path.join(work, "stream-source.raw")
    with open(source, "wb") as f:
        f.truncate(3 * MiB + 12345)
        f.write(BANNER * 16)
        f.seek(2 * MiB)
        f.write(pattern(4096))
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            source,
            path,
        ],
        check=True,
    )
    with open(path, "r+b") as f:
        head = f.read(64 * 1024)
        # qemu-img prints the CID without zero padding, so it may be shorter than ours: anchor on
        # the line (not ``parentCID=``) and give the difference back from the descriptor's NUL
        # padding so every later byte keeps its offset.
        match = re.search(rb"(?m)^CID=[0-9a-f]{1,8}$", head)
        if match is None:
            raise SystemExit(f"{path}: no CID line in the descriptor")
        grow = len(FIXED_CID) - len(match.group())
        padding = head.index(b"\0", match.end())
        if head[padding : padding + grow] != b"\0" * grow:
            raise SystemExit(f"{path}: no room in the descriptor for the fixed CID")
        text = head[match.end() : padding]
        fixed = head[: match.start()] + FIXED_CID + text + head[padding + grow :]
        f.seek(0)
        f.write(fixed)


def _vhd_checksum(buf: bytearray, at: int) -> int:
    # VHD spec: one's complement of the byte sum, checksum field taken as zero
    return ~(sum(buf) - sum(buf[at : at + 4])) & 0xFFFFFFFF


def make_dynamic_vhd(path: str) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", path, "4M"], check=True
    )
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        footer = bytearray(f.read(512))
        footer[24:28] = b"\0\0\0\0"  # timestamp (seconds since 2000-01-01)
        footer[68:84] = FIXED_UUID  # unique id
        struct.pack_into(">I", footer, 64, _vhd_checksum(footer, 64))
        f.seek(0)
        f.write(footer)  # the copy at offset 0 must equal the footer at the end
        f.seek(size - 512)
        f.write(footer)


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    if not shutil.which("qemu-img"):
        print("make_samples: qemu-img not found (apt-get install qemu-utils)", file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        make_raw(os.path.join(out, "tiny.raw"))
        make_stream(os.path.join(out, "tiny-stream.vmdk"), work)
        make_dynamic_vhd(os.path.join(out, "tiny-dynamic.vhd"))
    for name in ("tiny.raw", "tiny-stream.vmdk", "tiny-dynamic.vhd"):
        print(f"{name}: {os.path.getsize(os.path.join(out, name))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
