"""How long work shows it is alive: bars on a terminal, plain lines anywhere else (CI logs).

The pipeline reports three things: a counted stage starting (`start`), units of it done
(`advance`), and what it is busy with right now (`doing`: "loading Whisper base",
"transcribing 9-16"), which is what a person watching a bar sitting at 0 wants to know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """What the pipeline reports to a UI; this one reports nothing."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, n: int = 1, stage: str | None = None) -> None: ...

    def doing(self, what: str) -> None: ...


class Bars(Progress):
    """rich bars, one per counted stage, with what is being done beside them."""

    def __init__(self, progress) -> None:  # a started rich.progress.Progress
        self.p = progress
        self.tasks: dict[str, int] = {}
        self.last: str | None = None

    def start(self, stage: str, total: int) -> None:
        self.tasks[stage] = self.p.add_task(stage, total=total, doing="")
        self.last = stage

    def advance(self, n: int = 1, stage: str | None = None) -> None:
        stage = stage or self.last
        if stage in self.tasks:
            self.p.advance(self.tasks[stage], n)

    def doing(self, what: str) -> None:
        for task in self.tasks.values():
            self.p.update(task, doing=what)


class Lines(Progress):
    """Plain lines: a stage's count at most every `every` seconds (and when it completes), what is
    being done at most as often: a CI log shows the run is alive without a line per clip."""

    def __init__(self, write: Callable[[str], object], every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.every, self.clock = write, every, clock
        self.stages: dict[str, list] = {}  # stage -> [done, total, started, last printed]
        self.last: str | None = None
        self.now_doing = ""
        self.said_doing = -float("inf")  # when a `doing` line was last written

    @classmethod
    def to(cls, stream: TextIO, every: float = 10.0) -> Lines:
        def write(line: str) -> None:
            stream.write(line + "\n")
            stream.flush()
        return cls(write, every)

    def start(self, stage: str, total: int) -> None:
        t = self.clock()
        self.stages[stage] = [0, total, t, t]
        self.last = stage
        self.write(f"{stage}: 0/{total}")

    def advance(self, n: int = 1, stage: str | None = None) -> None:
        stage = stage or self.last
        if stage not in self.stages:
            return
        s = self.stages[stage]
        s[0] += n
        t = self.clock()
        if s[0] >= s[1] or t - s[3] >= self.every:
            s[3] = t
            self.write(self._line(stage, s, t))

    def doing(self, what: str) -> None:
        t = self.clock()
        if what != self.now_doing and t - self.said_doing >= self.every:
            self.said_doing = t
            self.write(f"  {what}")
        self.now_doing = what

    @staticmethod
    def _line(stage: str, s: list, t: float) -> str:
        done, total, started = s[0], s[1], s[2]
        elapsed = t - started
        line = f"{stage}: {done}/{total} ({100 * done // max(total, 1)} %), {elapsed:.0f} s"
        if 0 < done < total:
            line += f", about {elapsed * (total - done) / done:.0f} s left"
        return line
