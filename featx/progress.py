"""How long-running library calls report progress, without knowing who is watching.

``fit``, ``compare`` and ``extract`` take ``progress=`` (a :class:`Progress`, or None for silence).
The CLI passes a terminal implementation (``featx.cli.progress``); a notebook or a service can pass
its own. The library core never prints and never imports click.

Protocol::

    progress.start(total, label)     # a stage of ``total`` steps begins ("search svm", "compare")
    progress.advance(n=1, note="")   # n more steps done; ``note`` is a short status ("fold 2/5")
    progress.message(line)           # one finished thing worth a line of its own (a compare run)
    progress.close()                 # the stage is over
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    def start(self, total: int, label: str) -> None: ...

    def advance(self, n: int = 1, note: str = "") -> None: ...

    def message(self, line: str) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing (the default of every library call)."""

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, n: int = 1, note: str = "") -> None:
        pass

    def message(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


def as_progress(progress) -> Progress:
    """``None`` or ``False`` -> :class:`NullProgress`; a :class:`Progress` is returned as it is."""
    if progress is None or progress is False:
        return NullProgress()
    if isinstance(progress, Progress):
        return progress
    raise TypeError(f"progress must implement featx.progress.Progress, not {type(progress).__name__}")
