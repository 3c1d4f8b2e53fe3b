"""Progress as lines (CI logs) and as bars: what a person watching a long run reads."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console
from rich.progress import Progress as RichProgress

from evalkit.progress import Bars, Lines


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_are_throttled_but_every_stage_end_is_written():
    clock, lines = Clock(), []
    p = Lines(lines.append, every=10.0, clock=clock)
    p.start("synthesize", 20)
    for _ in range(19):  # 19 clips within 1.9 s: no line per clip
        clock.t += 0.1
        p.advance(1, stage="synthesize")
    assert lines == ["synthesize: 0/20"]
    clock.t = 20.0
    p.advance(1, stage="synthesize")
    assert lines[-1] == "synthesize: 20/20 (100 %), 20 s"


def test_a_line_says_how_long_is_left_from_the_rate_so_far():
    clock, lines = Clock(), []
    p = Lines(lines.append, every=10.0, clock=clock)
    p.start("evaluate", 40)
    clock.t = 12.0
    p.advance(8)  # no stage named: the last started
    assert lines[-1] == "evaluate: 8/40 (20 %), 12 s, about 48 s left"


def test_doing_is_written_when_it_changes_at_most_every_interval():
    clock, lines = Clock(), []
    p = Lines(lines.append, every=10.0, clock=clock)
    p.doing("transcribing a..b")
    p.doing("transcribing a..b")  # the same again: nothing new to say
    clock.t = 5.0
    p.doing("scoring a..b: dnsmos")  # changed, but too soon after the last line
    clock.t = 15.0
    p.doing("transcribing c..d")
    assert lines == ["  transcribing a..b", "  transcribing c..d"]


def test_bars_count_each_stage_on_its_own_and_show_what_is_being_done():
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    with RichProgress(console=console) as rp:
        bars = Bars(rp)
        bars.start("synthesize", 20)
        bars.start("evaluate", 20)
        bars.advance(3, stage="synthesize")
        bars.advance(8)  # the last started: evaluate
        bars.doing("transcribing 9..16")
        done = {t.description: t.completed for t in rp.tasks}
        doing = {t.fields["doing"] for t in rp.tasks}
    assert done == {"synthesize": 3, "evaluate": 8}
    assert doing == {"transcribing 9..16"}


@pytest.mark.slow
def test_a_run_outside_a_terminal_writes_progress_lines_and_says_what_the_cache_gave(tmp_path):
    """As in a CI log: stderr is a pipe, so the default is lines; a second run of the same clips
    takes every transcript and value from the cache and says so."""
    env = {k: v for k, v in os.environ.items() if k != "EVALKIT_PROGRESS"}
    env["EVALKIT_CACHE"] = str(tmp_path / "cache")  # the session's cache may hold these clips already
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us",
                               "--limit", "3", "--metrics", "intelligibility", "--out", str(tmp_path / out),
                               "--tracking-uri", uri], capture_output=True, text=True, env=env, timeout=600)

    first = run("a")
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[:2] == ["synthesize: 0/3", "evaluate: 0/3"]
    assert any(line.startswith("synthesize: 3/3 (100 %)") for line in lines)
    assert any(line.startswith("evaluate: 3/3 (100 %)") for line in lines)
    # The first chunk is two utterances (evalkit.schedule.FIRST_CHUNK)
    assert "  transcribing en-base-001..en-base-002 (once the ASR model has loaded)" in lines
    assert "from the cache: 0 of 3 transcripts, 0 of 3 metric values" in first.stdout
    again = run("b")
    assert again.returncode == 0, again.stderr
    assert "from the cache: 3 of 3 transcripts, 3 of 3 metric values" in again.stdout
