"""``validate``: issue 11 items 11 (``--at``, the shipped sample) and 13 (other tools' manifests:
errors vs warnings, the JSON ``valid`` field); issue 10 items 5 (numbers) and 6 (hostile XML)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from manifestkit.cli import main
from manifestkit.errors import ManifestError
from manifestkit.manifest import check_manifest, read_manifest, validate_manifest
from manifestkit.manifest import validate as validate_module
from manifestkit.manifest.model import SAMPLE_VALID_AT, samples_path

from .conftest import FROZEN, build, mutate

CHECKOUT_SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- issue 11 item 11: --at, and the sample manifest ----------------------------------------


def test_issue11_item11_sample_valid_at_its_signing_time(capsys):
    for folder in (samples_path(), CHECKOUT_SAMPLES):
        sample = str(folder / "sample-manifest.xml")
        code, out, _ = run(capsys, "validate", sample)  # today: long expired
        assert code == 2 and "[url-expired]" in out
        code, out, _ = run(capsys, "validate", "--at", SAMPLE_VALID_AT, sample)
        assert code == 0 and out.rstrip().endswith(f"{sample}: valid"), out
        code, out, _ = run(capsys, "validate", "--at", "2026-01-08T00:00:01+00:00", sample)
        assert code == 2 and "[url-expired]" in out  # 7 days after signing: expired
        code, out, _ = run(capsys, "validate", "--at", "2026-01-07T23:00", sample)  # naive: UTC
        assert code == 0, out


def test_issue11_item11_bad_at_is_a_usage_error(capsys):
    sample = str(samples_path() / "sample-manifest.xml")
    assert main(["validate", "--at", "yesterday", sample]) == 2  # usage errors return, not exit
    err = capsys.readouterr().err
    assert "ISO 8601" in err and len(err.strip().splitlines()) == 1


def test_issue11_item11_help_shows_where_the_samples_are(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    sub = capsys.readouterr().out
    folder = samples_path()
    assert str(folder) in top and (folder / "tiny-stream.vmdk").is_file()
    # the example each help shows runs as written, and passes
    for text in (top, sub):
        (line,) = [x for x in text.splitlines() if "manifestkit validate --at" in x]
        argv = shlex.split(line.strip())
        assert argv[0] == "manifestkit" and Path(argv[-1]).is_file()
        assert run(capsys, *argv[1:])[0] == 0


def test_issue11_item11_readme_shows_the_sample_with_at():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"validate --at {SAMPLE_VALID_AT} samples/sample-manifest.xml" in readme


# -- issue 11 item 13: manifests from other tools -------------------------------------------

EXPIRES = 1900000000  # SigV2 Expires: 2030-03-17


def aws_example_style(size: int = 2000, part: int = 1000) -> bytes:
    """A manifest shaped like AWS's documentation example: SigV2 URLs on the path-style global
    endpoint, and byte ranges whose last end equals size (0..1000, 1001..2000 for size 2000)."""
    folder = "a3a5e1b6-590d-43cc-97c1-15c7325d3f41"
    base = f"https://s3.amazonaws.com/myawsbucket/{folder}/disk.vmdk"
    sig = f"?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&amp;Expires={EXPIRES}&amp;Signature=5snEXAMPLE%3D"
    parts = []
    start, index = 0, 0
    while start <= size:
        end = min(start + part, size)
        url = f"{base}.part{index}{sig}"
        parts.append(
            f'<part index="{index}"><byte-range end="{end}" start="{start}"/>'
            f"<key>{folder}/disk.vmdk.part{index}</key><head-url>{url}</head-url>"
            f"<get-url>{url}</get-url><delete-url>{url}</delete-url></part>"
        )
        start, index = end + 1, index + 1
    return (
        '<?xml version="1.0" encoding="UTF-8"?><manifest><version>2010-11-15</version>'
        "<file-format>VMDK</file-format><importer><name>ec2-upload-disk-image</name>"
        "<version>1.0.0</version><release>2010-11-15</release></importer>"
        f"<self-destruct-url>{base}manifest.xml{sig}</self-destruct-url>"
        f"<import><size>{size}</size><volume-size>1</volume-size>"
        f'<parts count="{len(parts)}">{"".join(parts)}</parts></import></manifest>'
    ).encode()


def test_issue11_item13_aws_documentation_example_is_valid_with_warnings(tmp_path, capsys):
    path = tmp_path / "aws.xml"
    path.write_bytes(aws_example_style())
    header, parts = read_manifest(path)
    assert parts[-1].end == header.size  # the example's convention, not size - 1

    code, out, _ = run(capsys, "validate", str(path), "--at", "2026-01-01T00:00:00Z")
    assert code == 0, out
    assert "warning: /manifest/import/parts/part[2]/byte-range" in out
    assert "[range-end-is-size]" in out and "[url-sigv2]" in out and ": error: " not in out
    assert out.count("[url-sigv2]") == 1  # said once, not per URL
    assert out.rstrip().endswith("valid (2 warnings)")

    code, out, _ = run(capsys, "validate", str(path), "--at", "2026-01-01", "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True
    assert doc["errors"] == 0 and doc["warnings"] == 2
    found = {p["rule"]: p["severity"] for p in doc["problems"] if p["severity"] != "note"}
    assert found == {
        "range-end-is-size": "warning",
        "url-sigv2": "warning",
    }

    # SigV2's Expires is checked: after it, an error
    code, out, _ = run(capsys, "validate", str(path), "--at", "2031-01-01")
    assert code == 2 and "[url-expired]" in out
    code, out, _ = run(capsys, "validate", str(path), "--at", "2031-01-01", "--output", "json")
    assert json.loads(out)["valid"] is False

    # warnings do not stop the commands that refuse invalid manifests (verify, the importer)
    problems = validate_manifest(path, now=FROZEN)
    assert {p.severity for p in problems} == {"warning", "note"}
    check_manifest(path, now=FROZEN)


def test_issue11_item13_last_end_beyond_size_plus_one_is_an_error():
    doc = aws_example_style().replace(b'end="2000"', b'end="2001"')
    rules = {p.rule: p.severity for p in validate_manifest(doc, now=FROZEN)}
    assert rules["range-cover"] == "error"


def euca_vmdk(file_bytes: int, virtual: int) -> bytes:
    """A SigV4 VMDK manifest whose <size> is the virtual disk size, as euca2ools writes it."""

    def virtual_size(root):
        root.find("import/size").text = str(virtual)

    return mutate(build(file_bytes, 300, file_format="VMDK"), virtual_size)


def test_issue11_item13_euca2ools_vmdk_size_is_a_warning(tmp_path, capsys):
    path = tmp_path / "euca.xml"
    path.write_bytes(euca_vmdk(1000, 65536))
    code, out, _ = run(capsys, "validate", str(path), "--at", FROZEN.isoformat())
    assert code == 0, out
    assert "warning: /manifest/import/size" in out and "[size-virtual]" in out


def test_issue11_item13_euca2ools_size_with_the_image(tmp_path, capsys):
    """With --image the warning needs the real facts: size = the VMDK's capacity, the parts = its
    file. A streamOptimized VMDK from qemu-img is the image."""
    raw = tmp_path / "d.raw"
    raw.write_bytes(b"\1" * 4 * 1024 * 1024)
    vmdk = tmp_path / "d.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk],
        check=True,
    )
    file_bytes = vmdk.stat().st_size
    path = tmp_path / "euca.xml"
    path.write_bytes(euca_vmdk(file_bytes, 4 * 1024 * 1024))
    at = FROZEN.isoformat()
    code, out, _ = run(capsys, "validate", str(path), "--at", at, "--image", str(vmdk))
    assert code == 0 and "[size-virtual]" in out, out
    # another size than the capacity is no euca2ools manifest: an error
    path.write_bytes(euca_vmdk(file_bytes, 4 * 1024 * 1024 + 512))
    code, out, _ = run(capsys, "validate", str(path), "--at", at, "--image", str(vmdk))
    assert code == 2 and "[image-size]" in out


def test_issue11_item13_raw_size_above_parts_stays_an_error():
    def bigger(root):
        root.find("import/size").text = "5000"

    problems = validate_manifest(mutate(build(1000, 300), bigger), now=FROZEN)
    assert {p.rule for p in problems if p.severity == "error"} == {"range-cover"}


# -- issue 10 item 5: numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<size>1000</size>", "<size>1000²</size>".encode()),
        (b'index="1"', 'index="²"'.encode()),
        (b'start="300"', 'start="３00"'.encode()),  # fullwidth digit: isdigit() says yes
        (b"<size>1000</size>", b"<size>" + b"9" * 5000 + b"</size>"),
        (b'count="4"', b'count="' + b"4" * 5000 + b'"'),
        (b'end="599"', b'end="' + b"5" * 5000 + b'"'),
        (b'index="2"', b'index="0' + b"0" * 30 + b'2"'),
    ],
)
def test_issue10_item5_numbers_are_ascii_and_bounded(tmp_path, capsys, old, new):
    doc = build(1000, 300)
    assert old in doc
    path = tmp_path / "n.xml"
    path.write_bytes(doc.replace(old, new, 1))
    code, out, err = run(capsys, "validate", str(path), "--at", FROZEN.isoformat())
    assert code == 2
    assert "Traceback" not in err + out and "ValueError" not in err + out
    if err:  # refused outright: one line naming the file and the element
        assert len(err.strip().splitlines()) == 1
        assert err.startswith(f"manifestkit: error: {path}: /manifest/import/")
        assert "digits" in err
    else:
        assert ": error: " in out
    with pytest.raises(ManifestError):  # the readers used by verify/delete/resume: same
        header, parts = read_manifest(path)


# -- issue 10 item 6: hostile XML stays fast ------------------------------------------------


def test_issue10_item6_huge_attribute_skips_the_wording_pass(tmp_path, capsys, monkeypatch):
    """A 20 MB attribute: libxml2's own message is given; the xmlschema pass (145 s for 50 MB)
    is not run on a document this large."""
    doc = build(1000, 300).replace(b'<parts count="4"', b'<parts x="' + b"a" * 20_000_000 + b'"')
    path = tmp_path / "huge.xml"
    path.write_bytes(doc)

    def never(*args, **kwargs):
        raise AssertionError("the xmlschema pass ran on a 20 MB document")

    import xmlschema

    monkeypatch.setattr(xmlschema, "XMLResource", never)
    code, out, err = run(capsys, "validate", str(path), "--at", FROZEN.isoformat())
    assert code == 2, err
    (line,) = [x for x in out.splitlines() if ": error: " in x]
    assert "attribute 'x'" in line and len(line) < 1000


def test_issue10_item6_messages_quote_hostile_values_bounded(tmp_path):
    doc = build(1000, 300).replace(b"<key>", b"<key>" + b"k" * 1_000_000, 1)
    problems = validate_manifest(doc, now=FROZEN)
    assert problems and all(len(p.message) <= 700 for p in problems)
    assert any(re.search(r"…\[\d+ characters\]…", p.message) for p in problems)


def test_issue10_item6_small_documents_keep_readable_wording():
    doc = build(1000, 300).replace(b'<parts count="4"', b'<parts count="4" x="y"')
    (problem,) = validate_manifest(doc, now=FROZEN)
    assert problem.rule == "xsd" and "not allowed" in problem.message
    assert len(doc) < validate_module.READABLE_MAX_BYTES
