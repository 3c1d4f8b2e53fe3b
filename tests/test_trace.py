"""`--trace FILE`: a Trace Event Format file of every stage, per thread and per worker process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_process
from fakes import Tones

from evalkit import pipeline, trace
from evalkit.protocols import Metric
from evalkit.types import Score, Suite, Utterance


class Level(Metric):
    """Audio-only and process-safe: scores in the metric workers."""

    name, version, sample_rate = "level", "1", 16000
    higher_is_better = {"level": True}
    process_safe = True

    def score(self, items):
        return [Score({"level": float(np.abs(i.audio.samples).mean())}) for i in items]


class Length(Metric):
    """Scores in the main process (not process-safe)."""

    name, version, sample_rate = "length", "1", 16000
    higher_is_better = {"length": None}

    def score(self, items):
        return [Score({"length": float(len(i.utterance.text))}) for i in items]


def tone_suite(n: int) -> Suite:
    return Suite("t", "1", "en", "test", tuple(Utterance(f"u{i:02d}", f"tone number {i}") for i in range(n)),
                 "d", "mem")


# A process's start is known to a clock tick (/proc): a worker's start-up span may begin that much early.
TICK_US = 1_000_000 // os.sysconf("SC_CLK_TCK")


def spans(data: dict) -> list[dict]:
    """The file's events, checked against the Trace Event Format; its complete ("X") events."""
    assert set(data) >= {"traceEvents"} and isinstance(data["traceEvents"], list)
    for e in data["traceEvents"]:
        assert e["ph"] in ("X", "M"), e
        assert isinstance(e["name"], str) and isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        if e["ph"] == "X":
            assert isinstance(e["ts"], int) and isinstance(e["dur"], int) and e["dur"] >= 0, e
            assert isinstance(e.get("args", {}), dict), e
        else:
            assert e["name"] in ("process_name", "thread_name") and isinstance(e["args"]["name"], str), e
    return [e for e in data["traceEvents"] if e["ph"] == "X"]


def assert_nested(events: list[dict]) -> None:
    """On one thread, two spans are nested or apart, never partly overlapping."""
    threads: dict[tuple[int, int], list[dict]] = {}
    for e in events:
        threads.setdefault((e["pid"], e["tid"]), []).append(e)
    for on_thread in threads.values():
        open_: list[dict] = []
        for e in sorted(on_thread, key=lambda e: (e["ts"], -e["dur"])):
            while open_ and open_[-1]["ts"] + open_[-1]["dur"] <= e["ts"]:
                open_.pop()
            if open_:
                outer = open_[-1]
                assert e["ts"] + e["dur"] <= outer["ts"] + outer["dur"], (outer, e)
            open_.append(e)


def test_a_traced_evaluation_has_every_stage_and_the_workers_spans(tmp_path):
    path = tmp_path / "t.json"
    began = time.time_ns() // 1000
    with trace.tracing(path):
        rows = pipeline.evaluate(tone_suite(pipeline.CHUNK + 3), Tones(), None, [Level(), Length()], tmp_path / "run",
                                 workers=1).rows
    ended = time.time_ns() // 1000
    assert all(r.failure is None and "level" in r.values and "length" in r.values for r in rows)
    assert not trace.enabled() and trace.ENV not in os.environ  # off again, and not inherited by later processes
    events = spans(json.loads(path.read_text()))
    names = {e["name"] for e in events}
    assert {"synthesize", "synthesize chunk", "metric length", "metric level", "chunk 0", "chunk 1",
            "wait for synthesis", "wait for a metric worker"} <= names
    # The worker's spans came back from its own process, named as such.
    workers = {e["pid"] for e in events if e["name"] == "metric level"}
    assert workers and os.getpid() not in workers
    named = {e["pid"]: e["args"]["name"] for e in json.loads(path.read_text())["traceEvents"]
             if e["name"] == "process_name"}
    assert named[os.getpid()] == "evalkit" and all(named[w] == "evalkit metric worker" for w in workers)
    # Synthesis runs on its own thread; everything shares one clock and lies inside the run
    # (a worker's start-up span begins when its process started, also inside).
    synth = {e["tid"] for e in events if e["name"] == "synthesize"}
    assert synth and synth.isdisjoint({e["tid"] for e in events if e["name"] == "metric length"})
    for e in events:
        assert began - (TICK_US if e["cat"] == "startup" else 0) <= e["ts"] and e["ts"] + e["dur"] <= ended, e
    assert_nested(events)


def test_tracing_off_records_nothing(tmp_path):
    assert not trace.enabled()
    assert trace.span("a") is trace.span("b", x=1)  # one shared null context: nothing is allocated
    pipeline.evaluate(tone_suite(3), Tones(), None, [Length()], tmp_path, workers=0)
    assert trace.events() == [] and trace.drain() == []
    assert trace.stop() is None  # nothing to write


def unwritable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if not os.access(folder, os.W_OK) or not Path("/sys").is_dir():
        return folder
    return Path("/sys")  # root writes in any folder with any mode, but not in sysfs


@pytest.mark.parametrize("where", ["missing", "unwritable", "folder"])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_bad_trace_path_is_one_line_before_any_work(tmp_path, capsys, where, command):
    path = {"missing": tmp_path / "no-such-folder" / "t.json",
            "unwritable": unwritable_folder(tmp_path) / "t.json",
            "folder": tmp_path}[where]
    out = tmp_path / "out"
    code, stdout, stderr = run_in_process(capsys, command, "--suite", "en-base", "espeak:en-us", "--limit", "1",
                                          "--out", str(out), "--trace", str(path))
    assert code == 2, stderr
    assert stderr.startswith("error: --trace ") and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and not path.is_file()
    assert not trace.enabled() and trace.ENV not in os.environ


@pytest.mark.slow
def test_the_trace_of_a_real_run(tmp_path, sqlite_uri, capsys, asr, monkeypatch):
    # The session's Whisper is the one with the backend's default threads (threads never change a transcript).
    monkeypatch.setattr(pipeline, "whisper_threads", lambda *a, **k: None)
    # An empty cache of transcripts and values: earlier tests of the session scored these very clips,
    # and a cached run never transcribes, resamples or scores (the spans below would be missing).
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "trace.json"
    began = time.time_ns() // 1000
    code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", "espeak:en-us", "--limit", "2",
                                     "--metrics", "intelligibility,dnsmos", "--workers", "1",
                                     "--out", str(tmp_path / "run"), "--tracking-uri", sqlite_uri,
                                     "--trace", str(path))
    ended = time.time_ns() // 1000
    assert code == 0, stderr
    events = spans(json.loads(path.read_text()))
    names = {e["name"] for e in events}
    assert {"synthesize", "resample to 16000 Hz", "Whisper encode+decode", "metric intelligibility", "metric dnsmos",
            "write progress.jsonl", "write results (utterances.jsonl, .csv, summary.json)", "MLflow: log the run",
            "load the TTS adapter", "import evalkit.runner and what it imports"} <= names
    assert any(e["name"] == "metric dnsmos" and e["pid"] != os.getpid() for e in events)
    # Start-up spans begin when this process started (long ago, under pytest); the rest lie inside the run.
    for e in events:
        assert e["ts"] + e["dur"] <= ended, e
        if e["cat"] != "startup":
            assert began <= e["ts"], e
        elif e["pid"] != os.getpid():
            assert began - TICK_US <= e["ts"], e
    assert_nested(events)
