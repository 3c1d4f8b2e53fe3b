"""`evalkit runs`: finished runs side by side, from a real MLflow store (logged by the gateway) or
from a folder of run folders, in every format, sorted as asked."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from evalkit import leaderboard, record, tracking
from evalkit.errors import EvalkitError
from evalkit.types import Row


def make_run(folder: Path, model: str, step: int | None, cer: float, dnsmos: float, suite: str = "ko-base") -> Path:
    """A finished run folder as evalkit writes it (no audio: nothing here is listened to)."""
    folder.mkdir(parents=True)
    run_id = uuid.uuid4().hex
    summary = record.RunRecord.from_json({
        "run_id": run_id, "run_name": f"{suite}:{model}", "started_unix": time.time(), "finished_unix": time.time(),
        "suite": {"name": suite, "digest": "ab" * 32},
        "metrics": {"intelligibility": {"version": "2", "higher_is_better": {"cer": False}, "headline": "cer"},
                    "dnsmos": {"version": "2", "higher_is_better": {"dnsmos_ovrl": True}, "headline": "dnsmos_ovrl"}},
        "params": {"model": model, **({"step": step} if step is not None else {})},
        "tags": {"evalkit.run_id": run_id, "evalkit.suite": suite, "evalkit.suite_digest": "ab" * 32,
                 "evalkit.model": model, "evalkit.headlines": "cer,dnsmos_ovrl",
                 **({"evalkit.step": str(step)} if step is not None else {})},
        "aggregates": {"cer/mean": cer, "cer/corpus": cer * 1.1, "dnsmos_ovrl/mean": dnsmos, "failures/count": 0.0},
        "step": step})
    record.write(folder, summary, [Row("u1", "x", (), {"cer": cer})])
    return folder


@pytest.fixture
def three(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs / "c", "ckpt-3000.pt", 3000, cer=0.30, dnsmos=3.1)
    make_run(runs / "a", "ckpt-1000.pt", 1000, cer=0.10, dnsmos=2.9)
    make_run(runs / "b", "ckpt-2000.pt | <b>*x*</b>", 2000, cer=0.20, dnsmos=3.3)
    return runs


def test_a_folder_lists_its_finished_runs_in_step_order(three, tmp_path):
    (three / "unfinished").mkdir()
    (three / "unfinished" / "run.json").write_text("{}")
    (three / "garbage").mkdir()
    (three / "garbage" / "summary.json").write_text("[1, 2]")
    (three / "elsewhere").symlink_to(three / "a")  # a link is never followed
    other = make_run(tmp_path / "other" / "en", "en.pt", 5, cer=0.5, dnsmos=3.0, suite="en-base")
    (three / "en").symlink_to(other)
    entries = leaderboard.ordered(leaderboard.from_folder(three), None)
    assert [e.step for e in entries] == [1000, 2000, 3000]
    assert leaderboard.columns(entries) == ["cer/mean", "cer/corpus", "dnsmos_ovrl/mean", "failures/count"]


def test_sorting_by_a_metric_either_way_and_runs_without_it_last(three):
    entries = leaderboard.from_folder(three)
    assert [e.step for e in leaderboard.ordered(entries, "cer/mean")] == [1000, 2000, 3000]
    assert [e.step for e in leaderboard.ordered(entries, "-dnsmos_ovrl/mean")] == [2000, 3000, 1000]
    partial = [*entries, leaderboard.Entry("x", "m", 9, "ko-base", "", 0.0, (), {"failures/count": 1.0})]
    assert leaderboard.ordered(partial, "cer/mean")[-1].step == 9
    with pytest.raises(EvalkitError, match="no run has the metric 'wer/mean'"):
        leaderboard.ordered(entries, "wer/mean")


def test_every_format_carries_the_same_numbers(three):
    entries = leaderboard.ordered(leaderboard.from_folder(three), None)
    rows = list(csv.reader(io.StringIO(leaderboard.render(entries, "csv"))))
    assert rows[0][:5] == ["model", "step", "suite", "digest", "cer/mean"]
    assert [r[1] for r in rows[1:]] == ["1000", "2000", "3000"] and rows[2][0] == "ckpt-2000.pt | <b>*x*</b>"
    assert [float(r[4]) for r in rows[1:]] == [0.1, 0.2, 0.3]
    doc = json.loads(leaderboard.render(entries, "json"))
    assert [d["metrics"]["cer/mean"] for d in doc] == [0.1, 0.2, 0.3] and doc[0]["step"] == 1000
    md = leaderboard.render(entries, "md").splitlines()
    # A model name from someone else neither breaks the table's columns nor renders as markup.
    assert all(line.count(" | ") == md[0].count(" | ") for line in md[2:])
    assert "ckpt-2000.pt \\| \\<b\\>\\*x\\*\\</b\\>" in md[3]


@pytest.mark.slow
def test_mlflow_lists_logged_runs_without_downloading(three, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name in ("a", "b", "c"):
        tracking.log_run(three / name, uri, "evalkit-ko-base")
    en = make_run(tmp_path / "en", "en.pt", None, cer=0.5, dnsmos=3.0, suite="en-base")
    tracking.log_run(en, uri, "evalkit-en-base")
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    entries = leaderboard.ordered(leaderboard.from_mlflow(uri, suite="ko-base"), "-cer/mean")
    assert [(e.step, e.metrics["cer/mean"]) for e in entries] == [(3000, 0.3), (2000, 0.2), (1000, 0.1)]
    assert not (tmp_path / "cache" / "runs").exists()  # tags, params and metrics were enough
    assert {e.suite for e in leaderboard.from_mlflow(uri)} == {"ko-base", "en-base"}
    assert [e.suite for e in leaderboard.from_mlflow(uri, experiment="evalkit-en-base")] == ["en-base"]
    with pytest.raises(EvalkitError, match="no MLflow experiment named 'nope'"):
        leaderboard.from_mlflow(uri, experiment="nope")

    proc = subprocess.run([sys.executable, "-m", "evalkit", "runs", "--tracking-uri", uri, "--suite", "ko-base",
                           "--format", "csv", "--sort", "cer/corpus"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EVALKIT_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert [r[1] for r in rows[1:]] == ["1000", "2000", "3000"]


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "--format must be one of"),
    (["--suite", "x' or '1'='1"], "--suite"),
    (["--from", "/nonexistent/folder"], "not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "evalkit", "runs", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
