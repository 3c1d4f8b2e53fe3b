"""Crash-resume, interruption and output-folder failures, on the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli


def start_run(out: Path, uri: str, limit: int = 16) -> subprocess.Popen:
    """The real command, with a cache of its own (shared by reruns in the same test): these tests
    interrupt a run while it works, and transcripts cached by earlier tests would let it finish
    before anything could interrupt it."""
    env = dict(os.environ, EVALKIT_CACHE=str(out.parent / "cache"))
    return subprocess.Popen([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us",
                             "--limit", str(limit), "--metrics", "intelligibility", "--out", str(out),
                             "--tracking-uri", uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for_rows(out: Path, proc: subprocess.Popen, n: int, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = out / "progress.jsonl"
        if progress.exists():
            rows = progress.read_text(encoding="utf-8").count("\n")
            if rows >= n:
                return rows
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no progress within the timeout")


def finished_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "utterances.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_then_resume_redoes_only_what_was_in_flight(tmp_path, sqlite_uri):
    out = tmp_path / "killed"
    proc = start_run(out, sqlite_uri)
    wait_for_rows(out, proc, 8)
    proc.kill()  # SIGKILL: no handler runs, nothing gets flushed late
    proc.wait()
    saved = (out / "progress.jsonl").read_text().count("\n")
    assert 8 <= saved < 16 and not (out / "summary.json").exists()

    done = subprocess.run([sys.executable, "-m", "evalkit", "run", "--resume", str(out)], capture_output=True,
                          text=True, env=dict(os.environ, EVALKIT_CACHE=str(out.parent / "cache")))
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_utterances"] == saved
    # Only the utterances that were not saved were evaluated again.
    assert summary["cache"]["scores_cached"] + summary["cache"]["scores_computed"] == 16 - saved
    assert finished_ids(out) == [f"en-base-{i:03d}" for i in range(1, 17)]
    assert not (out / "progress.jsonl").exists()
    assert summary["tracking"]["run_id"]  # one MLflow run, logged once at the end


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path, sqlite_uri):
    out = tmp_path / "interrupted"
    proc = start_run(out, sqlite_uri)
    wait_for_rows(out, proc, 8)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and f"--resume {out}" in lines[0], stderr
    assert "Traceback" not in stderr

    again = start_run(out, sqlite_uri)  # exactly the same command
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_utterances"] >= 8
    assert len(finished_ids(out)) == 16


def test_other_configuration_in_an_unfinished_folder_is_refused(tmp_path, sqlite_uri):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": {"suite": "en-base", "model": "piper:joe"},
                                              "suite_digest": "something else"}))
    proc = run_cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--out", str(out),
                   "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2 and "another configuration" in proc.stderr


@pytest.mark.slow
def test_disk_full_is_one_line_and_resumable(tmp_path, sqlite_uri):
    out = tmp_path / "full"
    out.mkdir()
    os.symlink("/dev/full", out / "progress.jsonl")  # every write fails with ENOSPC, from the kernel
    proc = run_cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "2", "--metrics", "intelligibility",
                   "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0], proc.stderr


def test_unwritable_output_folder(tmp_path, sqlite_uri):
    proc = run_cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--out", "/proc/evalkit-cannot",
                   "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2 and "not writable" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_references_at_other_rates_stereo_and_8_bit(tmp_path, sqlite_uri, espeak_en):
    """A reference folder of 8 kHz, stereo, 8-bit wavs is read, mixed down and resampled."""
    from evalkit.types import SynthesisRequest

    refs = tmp_path / "refs"
    refs.mkdir()
    text = "Thank you."
    a = espeak_en.synthesize([SynthesisRequest("en-base-001", text, "en")])[0]
    import librosa

    mono8k = librosa.resample(a.samples, orig_sr=a.sample_rate, target_sr=8000)
    sf.write(refs / "en-base-001.wav", np.stack([mono8k, mono8k], axis=1), 8000, subtype="PCM_U8")
    out = tmp_path / "odd-refs"
    proc = run_cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--metrics", "mel_dtw",
                   "--reference-run", str(refs), "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((out / "utterances.jsonl").read_text().splitlines()[0])
    assert row["mel_dtw"] is not None and row["mel_dtw"] > 0
    # Read at its own rate and mixed down: the same speech lasts as long as the output.
    assert abs(row["duration_ratio"] - 1.0) < 0.05


@pytest.mark.slow
def test_mlflow_server_that_goes_away_mid_run_loses_nothing(tmp_path):
    """The server answers at start, dies during the run: exit 3, everything kept, sync uploads it."""
    from conftest import start_mlflow_server, stop_mlflow_server
    from mlflow.tracking import MlflowClient

    root = tmp_path / "server"
    root.mkdir()
    server, uri = start_mlflow_server(root)
    port = int(uri.rsplit(":", 1)[1])
    out = tmp_path / "orphan"
    try:
        proc = start_run(out, uri, limit=32)  # long enough to still be working when the server is gone
        wait_for_rows(out, proc, 1)
        stop_mlflow_server(server)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop_mlflow_server(server)
    assert proc.returncode == 3, stderr
    assert "unreachable" in stderr and f"evalkit sync {out}" in stderr and "Traceback" not in stderr
    assert len(finished_ids(out)) == 32 and len(list((out / "audio").glob("*.wav"))) == 32

    server, uri = start_mlflow_server(root, port)  # the same server comes back
    try:
        synced = run_cli("sync", str(out))
        assert synced.returncode == 0, synced.stderr
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("evalkit-en-base").experiment_id])
        assert len(runs) == 1 and runs[0].data.metrics["utterances/count"] == 32
        assert len(client.list_artifacts(runs[0].info.run_id, "audio")) == 32
    finally:
        stop_mlflow_server(server)
