"""`evalkit rescore`: a finished run's saved clips, scored again with one more metric, on real
espeak audio, real Whisper and a real sqlite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli
from mlflow.tracking import MlflowClient
from test_e2e import run_in_process

from evalkit.types import SynthesisRequest


def rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "utterances.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_adding_one_metric_computes_only_that_metric(tmp_path, capsys, sqlite_uri, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))  # nothing cached by other tests
    first, again = tmp_path / "first", tmp_path / "again"
    code, _, err = run_in_process(capsys, "run", "--suite", "en-base", "espeak:en-us", "--limit", "3", "--metrics",
                                  "intelligibility,dnsmos", "--out", str(first), "--tracking-uri", sqlite_uri)
    assert code == 0, err
    code, _, err = run_in_process(capsys, "rescore", str(first), "--add", "mel_dtw", "--reference-run", str(first),
                                  "--out", str(again))
    assert code == 0, err

    summary = json.loads((again / "summary.json").read_text())
    assert summary["cache"] == {"transcripts_cached": 3, "transcripts_computed": 0,
                                "scores_cached": 6, "scores_computed": 3}  # mel_dtw, and nothing else
    assert list(summary["metrics"]) == ["intelligibility", "dnsmos", "mel_dtw"]
    before = json.loads((first / "summary.json").read_text())
    assert summary["tags"]["evalkit.rescored_from"] == before["run_id"]
    assert summary["model"] == before["model"] and summary["params"]["model"] == "espeak:en-us"
    old, new = rows(first), rows(again)
    assert old.keys() == new.keys()
    for uid, row in new.items():
        assert (again / row["audio"]).read_bytes() == (first / old[uid]["audio"]).read_bytes()
        for key in ("synth_seconds", "rtf", "duration_s", "cer", "transcript", "dnsmos_ovrl"):
            assert row[key] == old[uid][key], key  # carried or cached, never re-measured
        assert row["mel_dtw"] == 0.0  # each clip against itself
        assert "mel_dtw" not in old[uid]

    client = MlflowClient(tracking_uri=sqlite_uri)
    runs = client.search_runs([client.get_experiment_by_name("evalkit-en-base").experiment_id])
    assert len(runs) == 2
    rescored = next(r for r in runs if r.info.run_id == summary["tracking"]["run_id"])
    assert rescored.data.metrics["mel_dtw/mean"] == 0.0
    assert rescored.data.tags["evalkit.rescored_from"] == before["run_id"]


@pytest.mark.slow
def test_a_recorded_failure_is_carried_not_retried(tmp_path, capsys, sqlite_uri, espeak_en):
    clips = tmp_path / "clips"
    clips.mkdir()
    for uid, text in (("en-base-001", "Thank you."), ("en-base-002", "Good morning.")):
        a = espeak_en.synthesize([SynthesisRequest(uid, text, "en")])[0]
        sf.write(clips / f"{uid}.wav", a.samples, a.sample_rate)
    sf.write(clips / "en-base-003.wav", np.zeros(16000, np.float32), 16000)  # a model that said nothing
    first, again = tmp_path / "first", tmp_path / "again"
    code, _, err = run_in_process(capsys, "run", "--suite", "en-base", str(clips), "--limit", "3", "--metrics",
                                  "intelligibility", "--out", str(first), "--tracking-uri", sqlite_uri)
    assert code == 0, err
    (clips / "en-base-003.wav").unlink()  # the model is gone: re-scoring must not need it
    code, _, err = run_in_process(capsys, "rescore", str(first), "--add", "stoi", "--reference-run", str(first),
                                  "--out", str(again))
    assert code == 0, err
    old, new = rows(first), rows(again)
    assert new["en-base-003"]["failure"] == old["en-base-003"]["failure"] and "silent" in old["en-base-003"]["failure"]
    assert new["en-base-003"].get("stoi") is None and new["en-base-003"].get("cer") is None
    assert new["en-base-001"]["stoi"] == 1.0 and new["en-base-001"]["cer"] == old["en-base-001"]["cer"]
    assert json.loads((again / "summary.json").read_text())["aggregates"]["failures/count"] == 1


def test_bad_rescores_are_one_line_errors(tmp_path, sqlite_uri):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text(json.dumps({"config": {"suite": "en-base", "model": "espeak:en-us"}}))
    for args, message in (
        (("rescore", str(unfinished), "--add", "stoi"), "not a finished evalkit run folder"),
        (("rescore", str(tmp_path / "nowhere"), "--add", "stoi"), "not a finished evalkit run folder"),
        (("rescore", str(unfinished)), "needs --add METRIC or --metrics"),
    ):
        proc = run_cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
