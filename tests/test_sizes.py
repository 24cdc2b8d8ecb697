import pytest

from manifestkit.errors import UsageError
from manifestkit.sizes import parse_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10485760", 10485760),
        ("10MiB", 10485760),
        ("10M", 10485760),
        ("10mb", 10485760),
        ("1G", 1 << 30),
        ("512K", 512 * 1024),
        ("2TiB", 2 << 40),
        (" 7 ", 7),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "10X", "-1", "1.5M", "M"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)
