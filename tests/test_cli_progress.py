"""The terminal progress display, on a fake TTY and on a plain stream."""
from __future__ import annotations

import io
import time

from featx.cli.progress import TerminalProgress, make_progress
from featx.progress import NullProgress, Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_live_line_on_a_tty_with_count_note_elapsed_and_eta():
    out, clock = FakeTTY(), Clock()
    p = TerminalProgress(out, clock=clock, tick=0)
    assert isinstance(p, Progress) and p.live
    p.start(0, "loading c.h5")
    assert out.getvalue() == "\r\x1b[Kloading c.h5  0s"          # shown at once, before any step
    p.start(4, "search svm")
    clock.now += 10
    p.advance(1, note="fold 1/4")
    assert out.getvalue().endswith("\r\x1b[Ksearch svm  1/4  fold 1/4  10s  ETA 30s")
    p.message("svm on a: AUC 0.9")
    assert out.getvalue().endswith("\r\x1b[Ksvm on a: AUC 0.9\n\r\x1b[Ksearch svm  1/4  fold 1/4  10s  ETA 30s")
    clock.now += 30
    p.advance(3)
    assert out.getvalue().endswith("search svm  4/4  fold 1/4  40s")
    p.close()
    assert out.getvalue().endswith("\r\x1b[K") and "\n" not in out.getvalue().split("AUC 0.9\n")[1]


def test_plain_lines_without_carriage_returns_when_not_a_tty():
    out, clock = io.StringIO(), Clock()
    p = TerminalProgress(out, clock=clock)
    assert not p.live
    p.start(0, "loading c.h5")
    p.close()
    p.start(20, "compare")
    for i in range(20):
        clock.now += 1
        p.advance(1, note=f"run {i + 1}")
        if i == 4:
            p.message("a / svm: AUC 0.91")
    p.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "loading c.h5" and lines[1] == "compare: 20 steps"
    assert "a / svm: AUC 0.91" in lines and lines[-1] == "compare: 20/20 in 20s"
    steps = [line for line in lines if line.startswith("compare  ")]
    assert steps[0] == "compare  2/20  run 2  2s  ETA 18s" and 5 <= len(steps) <= 10


def test_ticker_redraws_elapsed_while_a_step_runs():
    out = FakeTTY()
    p = TerminalProgress(out, tick=0.05)
    p.start(3, "fit")
    time.sleep(0.3)
    p.close()
    assert out.getvalue().count("\r\x1b[Kfit  0/3") >= 3


def test_quiet_is_silent():
    assert isinstance(make_progress(quiet=True), NullProgress)
    assert isinstance(make_progress(quiet=False, stream=io.StringIO()), TerminalProgress)
