import pytest

from manifestkit.cli._output import plural


@pytest.mark.parametrize("count,text", [(0, "0 parts"), (1, "1 part"), (2, "2 parts")])
def test_plural(count, text):
    assert plural(count, "part") == text
