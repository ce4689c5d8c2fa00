"""The terminal implementation of :class:`featx.progress.Progress`.

On a TTY: one live line (label, k of n, note, elapsed, ETA), redrawn in place and ticking every half
second even while a step runs; ``message()`` lines are printed above it. Not on a TTY (a log file, a
pipe): plain lines, no carriage returns, one per start, about one per tenth of the stage, one per
``message()`` and one when the stage ends. ``make_progress(quiet=True)`` reports nothing.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time

from featx.progress import NullProgress, Progress


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TerminalProgress:
    """Progress on ``stream`` (default stderr); ``live`` defaults to ``stream.isatty()``."""

    def __init__(self, stream=None, *, live: bool | None = None, clock=time.monotonic, tick: float = 0.5):
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(self.stream.isatty()) if live is None else live
        self.clock, self.tick = clock, tick
        self.label, self.total, self.done, self.note = "", 0, 0, ""
        self.started = clock()
        self._shown = False          # a live line is on screen
        self._printed_step = 0       # plain mode: the last step printed
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ---- the protocol -----------------------------------------------------------------------------

    def start(self, total: int, label: str) -> None:
        with self._lock:
            self._erase()
            self.label, self.total, self.done, self.note = label, max(0, int(total)), 0, ""
            self.started, self._printed_step = self.clock(), 0
            if self.live:
                self._draw()
                self._start_ticker()
            else:
                self._write(f"{label}" + (f": {self.total} steps" if self.total else "") + "\n")

    def advance(self, n: int = 1, note: str = "") -> None:
        with self._lock:
            self.done += n
            if note:
                self.note = note
            if self.live:
                self._draw()
            elif self.total and (self.done - self._printed_step) * 10 >= self.total and self.done < self.total:
                self._printed_step = self.done
                self._write(self.status() + "\n")

    def message(self, line: str) -> None:
        with self._lock:
            self._erase()
            self._write(f"{line}\n")
            if self.live and self.label:
                self._draw()

    def close(self) -> None:
        self._stop_ticker()
        with self._lock:
            self._erase()
            if not self.live and self.total:
                self._write(f"{self.label}: {self.done}/{self.total} in {_duration(self.clock() - self.started)}\n")
            self.label, self.total, self.done, self.note = "", 0, 0, ""

    # ---- drawing ------------------------------------------------------------------------------------

    def status(self) -> str:
        """The current line: label, k/n, note, elapsed and ETA (once a step is done)."""
        elapsed = self.clock() - self.started
        parts = [self.label]
        if self.total:
            parts.append(f"{min(self.done, self.total)}/{self.total}")
        if self.note:
            parts.append(self.note)
        parts.append(_duration(elapsed))
        if self.total and 0 < self.done < self.total:
            parts.append(f"ETA {_duration(elapsed / self.done * (self.total - self.done))}")
        return "  ".join(parts)

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._write("\r\x1b[K" + self.status()[:width])
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _start_ticker(self) -> None:
        if self._ticker is not None or self.tick <= 0:
            return
        self._stop.clear()

        def run():
            while not self._stop.wait(self.tick):
                with self._lock:
                    if self.label:
                        self._draw()

        self._ticker = threading.Thread(target=run, name="featx-progress", daemon=True)
        self._ticker.start()

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None


def make_progress(quiet: bool = False, stream=None) -> Progress:
    """The CLI's progress: silent with -q, else a :class:`TerminalProgress` on stderr."""
    return NullProgress() if quiet else TerminalProgress(stream)
