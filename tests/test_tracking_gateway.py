"""The MLflow gateway (evalkit.tracking) on real stores: run ids of both kinds, one cache of
downloaded runs shared by compare/report and --reference-run, downloads that are never half
cached, and failures that read as one line without credentials."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from evalkit import record, references, runs, tracking
from evalkit.errors import EvalkitError, TrackingError
from evalkit.record import RunRecord
from evalkit.types import Row, Suite, Utterance

ROOT = Path(__file__).resolve().parents[1]
IDS = ("u1", "u2")
SUITE = Suite("gw-suite", "1", "en", "two clips", tuple(Utterance(u, "text") for u in IDS), "gw-digest", "test")
PASSWORD = "s3cret-Pa55"


def make_run(folder: Path, uri: str, seed: int) -> SimpleNamespace:
    """A finished run folder (two seeded noise clips), logged to `uri` by the gateway."""
    (folder / "audio").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for uid in IDS:
        sf.write(folder / "audio" / f"{uid}.wav", rng.standard_normal(3200) * 0.1, 16000, subtype="PCM_16")
    run_id = uuid.uuid4().hex
    summary = RunRecord.from_json({
        "run_id": run_id, "run_name": f"gw-{seed}", "suite": {"name": SUITE.name, "digest": SUITE.digest},
        "params": {"model": f"m{seed}"}, "tags": {"evalkit.run_id": run_id, "evalkit.suite": SUITE.name},
        "aggregates": {"x/mean": float(seed)}, "finished_unix": time.time()})
    rows = [Row.from_json({"id": u, "text": "text", "audio": f"audio/{u}.wav", "failure": None, "notes": []})
            for u in IDS]
    record.write(folder, summary, rows)
    return SimpleNamespace(folder=folder, evalkit_id=run_id, mlflow_id=tracking.log_run(folder, uri, "gateway"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return SimpleNamespace(root=root, uri=uri, a=make_run(root / "a", uri, 1), b=make_run(root / "b", uri, 2))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty evalkit cache for this test alone."""
    path = tmp_path / "cache"
    monkeypatch.setenv("EVALKIT_CACHE", str(path))
    return path


@pytest.fixture
def mlflow_env(monkeypatch):
    """MLflow's variables as they were after the test: the gateway sets some for the process."""
    for name in (*tracking.ENVIRONMENT, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "x")  # recorded, so undone at teardown even if set again below
        monkeypatch.delenv(name)
    return monkeypatch


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: (inode, mtime in ns). A file downloaded again is a new file."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# --- run ids of both kinds ----------------------------------------------------------------


def test_summary_run_id_and_mlflow_run_id_load_the_same_run(store, cache):
    by_mlflow = runs.load_run(store.a.mlflow_id, store.uri, with_audio=False)
    by_evalkit = runs.load_run(store.a.evalkit_id, store.uri, with_audio=False)
    assert by_evalkit.mlflow_run_id == by_mlflow.mlflow_run_id == store.a.mlflow_id
    assert by_evalkit.summary.run_id == by_mlflow.summary.run_id == store.a.evalkit_id
    assert by_mlflow.source == f"mlflow:{store.a.mlflow_id}"
    assert store.a.evalkit_id in by_evalkit.source and store.a.mlflow_id in by_evalkit.source
    # One cache, keyed by the MLflow run id only.
    assert sorted(p.name for p in (cache / "runs").iterdir()) == [store.a.mlflow_id]
    assert tracking.resolve_run_id(store.uri, store.b.evalkit_id) == store.b.mlflow_id


def test_unknown_run_id_says_both_kinds_were_tried(store, cache):
    with pytest.raises(EvalkitError) as caught:
        runs.load_run("0123456789abcdef0123456789abcdef", store.uri)
    message = one_line(caught.value)
    assert "not found at" in message and store.uri in message
    assert "MLflow run id" in message and "evalkit run id" in message and "evalkit.run_id" in message
    assert not (cache / "runs" / "0123456789abcdef0123456789abcdef").exists()


def test_a_baseline_can_be_set_by_summary_run_id(store, cache):
    loaded = runs.load_run(store.b.evalkit_id, store.uri, with_audio=False)
    assert runs.set_baseline(loaded, "gw-nightly", store.uri) == []
    assert runs.find_baseline("gw-nightly", store.uri, SUITE.name) == store.b.mlflow_id
    assert runs.load_run("tag:gw-nightly", store.uri, suite=SUITE.name).mlflow_run_id == store.b.mlflow_id


# --- one cache ----------------------------------------------------------------------------


def test_a_run_loaded_for_compare_is_the_reference_run_without_a_second_download(store, cache, tmp_path):
    loaded = runs.load_run(store.a.mlflow_id, store.uri)  # as compare/report load it, with audio
    folder = cache / "runs" / store.a.mlflow_id
    assert loaded.audio_dir == folder / "audio"
    before = snapshot(cache)
    assert set(before) == {f"runs/{store.a.mlflow_id}/{n}" for n in
                           ("summary.json", "utterances.jsonl", "audio/u1.wav", "audio/u2.wav")}
    # A store that never held the run: any download would fail, so the audio must come from the cache.
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    refs = references.resolve(store.a.mlflow_id, SUITE, elsewhere)
    assert refs.source == f"mlflow:{store.a.mlflow_id}"
    assert dict(refs.paths) == {u: folder / "audio" / f"{u}.wav" for u in IDS}
    assert snapshot(cache) == before  # nothing downloaded, rewritten or added
    # The digest a run records for it, and the report's reference lookup, find the same files.
    assert refs.digest == references.reference_digest({u: store.a.folder / "audio" / f"{u}.wav" for u in IDS})
    reference = {"kind": "mlflow", "location": store.a.mlflow_id, "digest": refs.digest}
    scored = RunRecord.from_json({"run_id": "f" * 32, "suite": {"name": SUITE.name}, "reference": reference})
    assert runs.reference_paths(scored, IDS) == dict(refs.paths)


def test_a_reference_run_is_not_downloaded_again_for_compare(store, cache):
    refs = references.resolve(store.b.evalkit_id, SUITE, store.uri)  # the evalkit run id works here too
    assert refs.source == f"mlflow:{store.b.mlflow_id}"  # recorded by MLflow id: where the cache has it
    audio = snapshot(cache)
    assert set(audio) == {f"runs/{store.b.mlflow_id}/audio/{u}.wav" for u in IDS}
    loaded = runs.load_run(store.b.mlflow_id, store.uri)
    after = snapshot(cache)
    assert {k: after[k] for k in audio} == audio  # the audio stayed; only the tables came
    assert set(after) - set(audio) == {f"runs/{store.b.mlflow_id}/{n}" for n in ("summary.json", "utterances.jsonl")}
    assert loaded.summary.run_id == store.b.evalkit_id


def test_an_interrupted_download_is_not_a_cached_run(store, cache):
    c = make_run(store.root / "c", store.uri, 3)
    logged = next(store.root.glob(f"mlartifacts/*/{c.mlflow_id}/artifacts/audio/u2.wav"))
    logged.unlink()
    logged.symlink_to(store.root / "gone.wav")  # the store fails halfway through the audio folder
    with pytest.raises(EvalkitError) as caught:
        runs.load_run(c.mlflow_id, store.uri)
    message = one_line(caught.value)
    assert message.startswith(f"cannot download audio of MLflow run {c.mlflow_id} at {store.uri}")
    cached = cache / "runs" / c.mlflow_id
    assert sorted(p.name for p in cached.iterdir()) == ["summary.json", "utterances.jsonl"]  # no audio, no temp
    logged.unlink()
    shutil.copy(c.folder / "audio" / "u2.wav", logged)  # the store is whole again
    loaded = runs.load_run(c.mlflow_id, store.uri)
    assert sorted(p.name for p in loaded.audio_dir.iterdir()) == ["u1.wav", "u2.wav"]
    assert (loaded.audio_dir / "u2.wav").read_bytes() == (c.folder / "audio" / "u2.wav").read_bytes()


# --- errors -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_line_without_credentials(cache, mlflow_env):
    port = _free_port()
    with pytest.raises(TrackingError) as caught:
        runs.load_run("0123456789abcdef0123456789abcdef", f"http://alice:{PASSWORD}@127.0.0.1:{port}")
    message = one_line(caught.value)
    assert "unreachable" in message and f"http://127.0.0.1:{port}" in message and PASSWORD not in message


class _HealthOnly(http.server.BaseHTTPRequestHandler):
    """Says it is healthy, then answers every MLflow call with an HTML error page."""

    def do_GET(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"OK" if self.path == "/health" else b"<html>\n<body>Not Found</body>\n</html>\n"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_failing_server_and_a_broken_store_are_one_line_without_credentials(tmp_path, cache, mlflow_env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://alice:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
        for call, start in ((lambda: runs.load_run("0" * 32, uri), "cannot look up MLflow run"),
                            (lambda: runs.find_baseline("nightly", uri), "cannot search MLflow for baseline 'nightly'"),
                            (lambda: tracking.set_tags(uri, "0" * 32, {"k": "v"}), "cannot tag MLflow run")):
            with pytest.raises(EvalkitError) as caught:
                call()
            message = one_line(caught.value)
            assert message.startswith(start) and f"@127.0.0.1:{server.server_address[1]} (" in message
            assert PASSWORD not in message and "alice:***@" in message and "404" in message
    finally:
        server.shutdown()
        server.server_close()
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 300)
    with pytest.raises(EvalkitError) as caught:
        runs.load_run("0123456789abcdef0123456789abcdef", f"sqlite:///{junk}")
    assert one_line(caught.value) == (f"cannot open the MLflow store at sqlite:///{junk} "
                                      "(database error: file is not a database)")


def test_translate_names_the_cause_and_hides_the_password(mlflow_env):
    import requests

    port = _free_port()
    try:
        requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get", timeout=5)
    except requests.RequestException as exc:
        refused = exc
    error = tracking.translate(refused, "cannot tag MLflow run x", f"http://bob:{PASSWORD}@127.0.0.1:{port}",
                               TrackingError)
    assert isinstance(error, TrackingError)
    assert str(error) == (f"cannot tag MLflow run x at http://bob:***@127.0.0.1:{port} "
                          "(server unreachable: Connection refused)")
    kept = EvalkitError("already one line")
    assert tracking.translate(kept, "anything", "sqlite:///x") is kept


def test_environment_is_set_only_where_the_user_did_not(mlflow_env):
    mlflow_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    tracking.configure_environment()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's
    mlflow_env.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    tracking.configure_environment()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


@pytest.mark.slow
def test_mlflow_sends_no_telemetry_through_the_gateway(tmp_path):
    """Outside pytest and CI (MLflow's own reasons to stay quiet), the gateway is what turns it off."""
    # The variables mlflow.telemetry.utils reads to stay quiet on its own.
    quiet = {"PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
             "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
             "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
             "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    code = ("import os; from evalkit import tracking; tracking.client(os.environ['URI']); "
            "from mlflow.telemetry import get_telemetry_client; "
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], get_telemetry_client() is None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["true", "True"]


# --- the command line, on runs made by `evalkit run` ----------------------------------------------


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EVALKIT_CACHE": str(cache)})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two espeak runs of the first two en-base sentences, scored with mel_dtw against the same
    folder of references, logged to one sqlite store."""
    root = tmp_path_factory.mktemp("gateway-cli")
    refs = root / "refs"
    refs.mkdir()
    rng = np.random.default_rng(7)
    for uid in ("en-base-001", "en-base-002"):
        sf.write(refs / f"{uid}.wav", rng.standard_normal(16000) * 0.1, 16000, subtype="PCM_16")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    made = {"root": root, "uri": uri}
    for name in ("a", "b"):
        proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "2", "--metrics", "mel_dtw",
                   "--reference-run", str(refs), "--workers", "0", "--out", str(root / name),
                   "--tracking-uri", uri, cache=root / "run-cache")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((root / name / "summary.json").read_text())
        made[name] = SimpleNamespace(folder=root / name, evalkit_id=summary["run_id"],
                                     mlflow_id=summary["tracking"]["run_id"])
        assert made[name].evalkit_id != made[name].mlflow_id
    return SimpleNamespace(**made)


@pytest.mark.slow
def test_compare_report_and_baseline_accept_the_summary_run_id(made, tmp_path):
    cache = tmp_path / "cache"
    a, b = made.a, made.b
    proc = cli("compare", a.evalkit_id, b.evalkit_id, "--tracking-uri", made.uri, cache=cache)
    assert proc.returncode == 0 and "mel_dtw" in proc.stdout, proc.stderr
    proc = cli("report", "--candidate", b.evalkit_id, "--baseline", a.evalkit_id, "--tracking-uri", made.uri,
               "--out", str(tmp_path / "report"), cache=cache)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert written["candidate"]["mlflow_run_id"] == b.mlflow_id and written["candidate"]["run_id"] == b.evalkit_id
    assert written["baseline"]["mlflow_run_id"] == a.mlflow_id and written["baseline"]["run_id"] == a.evalkit_id
    # The report was logged to the candidate's MLflow run, found by its evalkit run id.
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=made.uri).get_run(b.mlflow_id).data.tags["evalkit.report.last"] == "pass"
    assert sorted(p.name for p in (cache / "runs").iterdir()) == sorted([a.mlflow_id, b.mlflow_id])
    proc = cli("baseline", "set", a.evalkit_id, "--name", "gw-cli", "--tracking-uri", made.uri, cache=cache)
    assert proc.returncode == 0 and a.mlflow_id in proc.stdout, proc.stderr
    proc = cli("compare", "0123456789abcdef0123456789abcdef", a.mlflow_id, "--tracking-uri", made.uri, cache=cache)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "not found at" in lines[0] and "MLflow run id" in lines[0] and "evalkit run id" in lines[0]


@pytest.mark.slow
def test_a_run_fetched_for_a_report_is_the_reference_run_of_the_next_without_a_download(made, tmp_path):
    cache = tmp_path / "cache"
    proc = cli("report", "--candidate", made.b.mlflow_id, "--baseline", made.a.mlflow_id, "--tracking-uri", made.uri,
               "--out", str(tmp_path / "report"), cache=cache)
    assert proc.returncode == 0, proc.stderr
    before = snapshot(cache / "runs")
    assert f"{made.a.mlflow_id}/audio/en-base-001.wav" in before
    # Logged to another store, which never held run a: its audio can only come from the cache.
    other = tmp_path / "other"
    other.mkdir()
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "2", "--metrics", "mel_dtw", "--workers", "0",
               "--reference-run", made.a.mlflow_id, "--out", str(tmp_path / "c"),
               "--tracking-uri", f"sqlite:///{other / 'mlflow.db'}", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(cache / "runs") == before
    assert not (cache / "reference-runs").exists()
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["reference"]["kind"] == "mlflow" and summary["reference"]["location"] == made.a.mlflow_id
    rows = [json.loads(line) for line in (tmp_path / "c" / "utterances.jsonl").read_text().splitlines()]
    assert all(r["mel_dtw"] == pytest.approx(0.0, abs=1e-6) for r in rows)  # the same espeak audio as run a's
