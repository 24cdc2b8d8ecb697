"""Progress without printing: the library calls a ``Progress``; the CLI draws it with tqdm."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, description: str) -> None: ...

    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    """The default sink: reports go nowhere."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def close(self) -> None:
        pass
