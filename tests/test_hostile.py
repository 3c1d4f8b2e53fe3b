"""Hostile suites, run folders and invocations (Hardening II), each on the real command in a
fresh process: the exit code, the one-line message, and that nothing was read, written, sent
or executed that should not have been."""

from __future__ import annotations

import base64
import http.server
import json
import os
import resource
import shutil
import signal
import socketserver
import struct
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_hardening import finished_ids, wait_for_rows

# No reference audio in en-base: `stoi` is then skipped with a note on every utterance, so these
# runs exercise the whole command (synthesis, record, MLflow) without loading Whisper.
LIGHT = ("--metrics", "stoi", "--workers", "0")


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def write_suite(folder: Path, header: str, lines: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(header, encoding="utf-8")
    lines = lines if lines is not None else [{"id": "u1", "text": "Good morning."}]
    (folder / "u.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return folder


HEADER = "name: {name}\nversion: 1\nlanguage: {language}\ndescription: test\nutterances: u.jsonl\n"


def header(name: str = "t", language: str = "en") -> str:
    return HEADER.format(name=name, language=language)


# --- suites ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink", "refs_symlink", "speaker", "utterances"])
def test_a_suite_cannot_make_evalkit_read_outside_its_folder(tmp_path, where, sqlite_uri):
    secret = tmp_path / "secret.wav"
    sf.write(secret, np.zeros(1600, dtype=np.float32) + 0.1, 16000)
    suite = tmp_path / "suite"
    utt = {"id": "u1", "text": "Good morning."}
    head = header()
    if where == "absolute":
        utt["reference"] = str(secret)
    elif where == "dotdot":
        utt["reference"] = "../secret.wav"
    elif where == "symlink":
        suite.mkdir()
        os.symlink(secret, suite / "ref.wav")
        utt["reference"] = "ref.wav"
    elif where == "refs_symlink":
        (suite / "refs").mkdir(parents=True)
        os.symlink(secret, suite / "refs" / "u1.wav")
    elif where == "speaker":
        head += f"speakers:\n  s1: {secret}\n"
        utt["speaker"] = "s1"
    else:
        head = head.replace("utterances: u.jsonl", "utterances: ../outside.jsonl")
        (tmp_path / "outside.jsonl").write_text(json.dumps(utt) + "\n")
    write_suite(suite, head, [utt])
    out = tmp_path / "run"
    proc = cli("run", "--suite", str(suite), "espeak:en-us", *LIGHT, "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2
    assert "outside" in one_line(proc)
    assert not out.exists()  # refused before anything ran
    shown = cli("suites", "show", str(suite))
    assert shown.returncode == 2 and "outside" in one_line(shown)


def test_a_suite_name_cannot_move_the_run_folder(tmp_path, sqlite_uri):
    suite = write_suite(tmp_path / "suite", header(name="x/../../y"))
    work = tmp_path / "work"
    work.mkdir()
    proc = cli("run", "--suite", str(suite), "espeak:en-us", *LIGHT, "--tracking-uri", sqlite_uri, cwd=work)
    assert proc.returncode == 2 and "suite name" in one_line(proc)
    assert list(work.iterdir()) == [] and not (tmp_path / "y").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):  # 9**9 nodes once expanded
        prev = chr(ord("a") + i - 1)
        bomb.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{','.join(['*' + prev] * 9)}]")
    suite = write_suite(tmp_path / "suite", header() + "\n".join(bomb) + "\n")
    # 1 GiB of address space above what the interpreter already maps: expanding the bomb would need
    # gigabytes; refusing it needs nothing.
    proc = subprocess.run([sys.executable, "-c", (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30)); "
        "sys.argv = ['evalkit', 'suites', 'show', sys.argv[1]]; from evalkit.cli import main; main()"), str(suite)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "alias" in one_line(proc)


@pytest.mark.parametrize("language", ["xx", "'ko; rm'", "english"])
def test_a_language_evalkit_cannot_transcribe_is_refused(tmp_path, language, sqlite_uri):
    suite = write_suite(tmp_path / "suite", header(language=language))
    out = tmp_path / "run"
    proc = cli("run", "--suite", str(suite), "espeak:en-us", *LIGHT, "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2 and "language" in one_line(proc) and not out.exists()


def test_an_asr_model_that_lacks_the_suite_language_is_refused_before_anything_runs(tmp_path, sqlite_uri):
    from evalkit.asr.faster_whisper import bundled_base

    english_only = tmp_path / "whisper-en"  # a model folder whose config lists no language tokens
    english_only.mkdir()
    config = json.loads((bundled_base() / "config.json").read_text())
    config.pop("lang_ids")
    (english_only / "config.json").write_text(json.dumps(config))
    (english_only / "model.bin").write_bytes(b"not loaded: refused first")
    out = tmp_path / "run"
    proc = cli("run", "--suite", "ko-base", "espeak:ko", "--limit", "1", "--metrics", "intelligibility",
               "--asr", f"faster-whisper:{english_only}", "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2 and "does not transcribe 'ko'" in one_line(proc) and not out.exists()


@pytest.mark.slow
def test_markup_in_suite_text_is_printed_as_text(tmp_path, sqlite_uri):
    suite = write_suite(tmp_path / "suite", header().replace("description: test", "description: '[/bold] [red]x'"),
                        [{"id": "u1", "text": "Hello [/bold] [link=file:///etc] world."}])
    proc = cli("run", "--suite", str(suite), "espeak:en-us", *LIGHT, "--out", str(tmp_path / "run"),
               "--tracking-uri", sqlite_uri)
    assert proc.returncode == 0, proc.stderr
    shown = cli("suites", "show", str(suite))
    assert shown.returncode == 0, shown.stderr
    assert "[/bold] [red]x" in shown.stdout and "Hello [/bold] [link=file:///etc] world." in shown.stdout


# --- run folders ----------------------------------------------------------------------------


def unfinished_run(folder: Path, old: Path, uri: str, model: str = "espeak:en-us") -> None:
    from evalkit import suite

    folder.mkdir(parents=True)
    config = {"suite": "en-base", "model": model, "adapter": None, "asr": "faster-whisper:base",
              "metrics": ["stoi"], "device": "cpu", "limit": 2, "out_dir": str(old), "tracking_uri": uri,
              "experiment": None, "tags": {}, "reference_run": None, "workers": 0, "audio_from": None}
    (folder / "run.json").write_text(json.dumps({"config": config, "suite_digest": suite.load("en-base").digest}))


@pytest.mark.slow
def test_resume_finishes_the_folder_it_is_given(tmp_path, sqlite_uri):
    old, moved = tmp_path / "old-place", tmp_path / "moved"
    unfinished_run(moved, old, sqlite_uri)
    proc = cli("run", "--resume", str(moved))
    assert proc.returncode == 0, proc.stderr
    assert finished_ids(moved) == ["en-base-001", "en-base-002"] and not old.exists()


def test_resume_never_runs_a_command_written_in_the_folder(tmp_path, sqlite_uri):
    marker = tmp_path / "pwned"
    folder = tmp_path / "from-a-colleague"
    unfinished_run(folder, folder, sqlite_uri, model=f"cmd:touch {marker} {{out}}")
    proc = cli("run", "--resume", str(folder))
    assert proc.returncode == 2
    line = one_line(proc)
    assert "runs a command" in line and "--out" in line
    assert not marker.exists() and not (folder / "audio").exists()


def finished_run(tmp_path: Path, uri: str, name: str = "run", limit: int = 2) -> Path:
    out = tmp_path / name
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", str(limit), *LIGHT, "--out", str(out),
               "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["absolute", "dotdot", "symlink"])
def test_rescore_reads_no_audio_from_outside_the_run(tmp_path, sqlite_uri, edit):
    out = finished_run(tmp_path, sqlite_uri)
    secret = tmp_path / "secret.wav"
    sf.write(secret, np.full(16000, 0.25, dtype=np.float32), 16000)
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    if edit == "symlink":
        (out / "audio" / "en-base-001.wav").unlink()
        os.symlink(secret, out / "audio" / "en-base-001.wav")
    else:
        rows[0]["audio"] = str(secret) if edit == "absolute" else "audio/../../secret.wav"
        (out / "utterances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = tmp_path / "again"
    proc = cli("rescore", str(out), "--add", "mel_dtw", "--out", str(again))
    assert proc.returncode == 2 and "en-base-001" in one_line(proc)
    assert not again.exists()


@pytest.mark.slow
def test_sync_is_idempotent(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    out = finished_run(tmp_path, sqlite_uri)
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    (tmp_path / "other").mkdir()
    ids = set()
    for _ in range(2):
        proc = cli("sync", str(out), "--tracking-uri", other)
        assert proc.returncode == 0, proc.stderr
        ids.add(proc.stdout.split()[2])
    client = MlflowClient(tracking_uri=other)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and ids == {runs[0].info.run_id}
    again = cli("sync", str(out))  # to the store it was logged to: nothing new either
    assert again.returncode == 0 and "already logged" in again.stdout
    first = MlflowClient(tracking_uri=sqlite_uri)
    assert len(first.search_runs([e.experiment_id for e in first.search_experiments()])) == 1


@pytest.mark.slow
def test_sqlite_artifacts_stay_beside_the_database(tmp_path):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", *LIGHT, "--experiment", "Default",
               "--out", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert list(elsewhere.iterdir()) == []
    assert len(list(store.glob("mlartifacts/*/*/artifacts/audio/en-base-001.wav"))) == 1


# --- invocations ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("report", "a", "b", "--fail-on-regresion"),
    ("evaluate", "--suite", "en-base"),
    ("run", "--suite", "en-base", "espeak:en-us", "--limit", "abc"),
    ("run", "--suite", "en-base", "espeak:en-us", "--workers", "-1"),
])
def test_usage_errors_exit_2_with_one_line(args):
    proc = cli(*args)
    assert proc.returncode == 2
    assert one_line(proc).startswith("error: ")


def test_cuda_that_is_not_there_is_a_usage_error_before_anything_runs(tmp_path, sqlite_uri):
    out = tmp_path / "run"
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--device", "cuda",
               "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 2 and "no CUDA device" in one_line(proc) and not out.exists()


def test_debug_shows_the_chain_behind_the_one_line(tmp_path):
    suite = write_suite(tmp_path / "suite", "name: [unclosed\n")
    plain = cli("suites", "show", str(suite))
    debug = cli("suites", "show", str(suite), env={"EVALKIT_DEBUG": "1"})
    assert plain.returncode == debug.returncode == 2 and "not valid YAML" in one_line(plain)
    assert "Traceback" in debug.stderr and "yaml" in debug.stderr.lower()


@pytest.mark.slow
def test_a_broken_plugin_is_skipped_unless_asked_for(tmp_path, sqlite_uri):
    site = tmp_path / "site"
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evalkit.adapters]\nbroken = broken_mod:Adapter\n\n"
                                           "[evalkit.metrics]\nbrokenm = broken_mod:Metric\n")
    (site / "broken_mod.py").write_text("raise RuntimeError('half-installed package')\n")
    env = {"PYTHONPATH": str(site)}
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--workers", "0",
               "--out", str(tmp_path / "run"), "--tracking-uri", sqlite_uri, "--metrics", "stoi", env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'broken'" in warnings[0] and "half-installed package" in warnings[0]
    asked = cli("run", "--suite", "en-base", "espeak:en-us", "--adapter", "broken", "--limit", "1", *LIGHT,
                "--out", str(tmp_path / "asked"), "--tracking-uri", sqlite_uri, env=env)
    assert asked.returncode == 2 and "half-installed package" in one_line(asked)
    listed = cli("metrics", env=env)
    assert listed.returncode == 0 and "intelligibility" in listed.stdout and "brokenm" in listed.stderr


# --- the output boundary ----------------------------------------------------------------------


@pytest.mark.slow
def test_out_of_range_samples_are_a_recorded_failure_not_clipped(tmp_path, sqlite_uri):
    folder = tmp_path / "wavs"
    folder.mkdir()
    t = np.arange(16000) / 16000
    sf.write(folder / "en-base-001.wav", (3.0 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000,
             subtype="FLOAT")
    sf.write(folder / "en-base-002.wav", (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000,
             subtype="FLOAT")
    out = tmp_path / "run"
    proc = cli("run", "--suite", "en-base", str(folder), "--limit", "2", *LIGHT, "--out", str(out),
               "--tracking-uri", sqlite_uri)
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in map(json.loads, (out / "utterances.jsonl").read_text().splitlines())}
    assert "outside [-1, 1]" in rows["en-base-001"]["failure"] and rows["en-base-002"]["failure"] is None
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["en-base-002.wav"]
    # ...and the terminal names it, with its utterance id.
    assert "en-base-001: samples outside [-1, 1]" in proc.stdout


def sparse_wav(path: Path, hours: float, rate: int = 48000) -> None:
    """A valid 16-bit wav of `hours`, holding zeros that take no disk space."""
    data = int(hours * 3600 * rate) * 2
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
                                                                                  rate * 2, 2, 16))
        f.write(b"data" + struct.pack("<I", data))
        f.truncate(44 + data)


@pytest.mark.slow
def test_a_six_hour_wav_is_refused_from_its_header(tmp_path, sqlite_uri):
    folder = tmp_path / "wavs"
    folder.mkdir()
    sparse_wav(folder / "en-base-001.wav", hours=6)  # 2 GB of samples, 8 GB as float32 if read
    sf.write(folder / "en-base-002.wav", np.full(16000, 0.1, dtype=np.float32), 16000)
    out = tmp_path / "run"
    # Reading the samples would take 4 GiB as float32: with 3 GiB of data segment it would fail with
    # a MemoryError, so "too long" proves the length came from the header.
    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", str(folder), "--limit", "2",
                           *LIGHT, "--out", str(out), "--tracking-uri", sqlite_uri], capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30)))
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in map(json.loads, (out / "utterances.jsonl").read_text().splitlines())}
    assert "audio too long: 21600.0 s, cap 10.0 s" in rows["en-base-001"]["failure"]
    assert rows["en-base-002"]["failure"] is None


@pytest.mark.slow
def test_a_stage_that_fails_on_every_utterance_exits_4_and_says_so(tmp_path, sqlite_uri):
    out = tmp_path / "run"
    proc = cli("run", "--suite", "en-base", "cmd:false {out}", "--limit", "2", *LIGHT, "--out", str(out),
               "--tracking-uri", sqlite_uri)
    assert proc.returncode == 4
    assert "synthesis: synthesis failed" in one_line(proc) and "every utterance" in proc.stderr
    assert "en-base-001: synthesis failed: RuntimeError: false exited 1" in proc.stdout  # first reasons, with ids
    summary = json.loads((out / "summary.json").read_text())
    assert summary["broken_stages"] and summary["tracking"]["run_id"]  # saved and logged all the same


@pytest.mark.slow
def test_whisper_failing_on_every_clip_exits_4(tmp_path, sqlite_uri):
    from evalkit.asr.faster_whisper import bundled_base

    broken = tmp_path / "whisper-broken"
    broken.mkdir()
    shutil.copy(bundled_base() / "config.json", broken / "config.json")
    (broken / "model.bin").write_bytes(b"\0" * 64)
    out = tmp_path / "run"
    proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "2", "--metrics", "intelligibility",
               "--asr", f"faster-whisper:{broken}", "--out", str(out), "--tracking-uri", sqlite_uri)
    assert proc.returncode == 4 and "asr: asr failed" in one_line(proc)
    assert "en-base-001: asr failed" in proc.stdout


# --- disk, signals ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_exits_2_with_one_line_and_no_torn_wav(tmp_path, sqlite_uri):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    out = tmp_path / "full"
    audio = out / "audio"
    audio.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(audio)], capture_output=True)
    assert mounted.returncode == 0, mounted.stderr  # root here: this must work
    try:
        proc = cli("run", "--suite", "en-base", "espeak:en-us", "--limit", "8", *LIGHT, "--out", str(out),
                   "--tracking-uri", sqlite_uri)
        assert proc.returncode == 2
        line = one_line(proc)
        assert "No space left on device" in line and f"--resume {out}" in line
        names = [p.name for p in audio.iterdir()]
        assert names and not [n for n in names if not n.endswith(".wav") or n.startswith(".")]
        for p in audio.iterdir():  # every wav that is there is whole
            assert sf.info(str(p)).frames > 0
    finally:
        subprocess.run(["umount", "-l", str(audio)], check=False)
    resumed = cli("run", "--resume", str(out))  # room again: finishing it works
    assert resumed.returncode == 0, resumed.stderr
    assert len(finished_ids(out)) == 8


@pytest.mark.slow
def test_sigterm_saves_what_finished_cleans_up_and_says_how_to_resume(tmp_path, sqlite_uri):
    out, tmp = tmp_path / "terminated", tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, EVALKIT_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us", "--limit", "16",
           "--metrics", "intelligibility", "--out", str(out), "--tracking-uri", sqlite_uri]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_rows(out, proc, 8)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "terminated" in lines[0] and f"--resume {out}" in lines[0], stderr
    saved = (out / "progress.jsonl").read_text().count("\n")
    assert saved >= 8
    assert not list(tmp.glob("evalkit-espeak-*"))
    done = subprocess.run([sys.executable, "-m", "evalkit", "run", "--resume", str(out)], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["resumed_utterances"] == saved


# --- credentials --------------------------------------------------------------------------------


class _AuthProxy(http.server.BaseHTTPRequestHandler):
    """Basic auth in front of a real MLflow server: forwards only requests that carry it."""

    upstream = ""
    expected = ""
    seen: list[str] = []

    def _forward(self) -> None:
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        if auth != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        request = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, payload, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_credentials_in_the_tracking_uri_work_and_are_never_shown_or_stored(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    password = "s3cret-Pa55"
    _AuthProxy.upstream = mlflow_server
    _AuthProxy.expected = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    _AuthProxy.seen = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AuthProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        out = tmp_path / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us",
                               "--limit", "1", *LIGHT, "--out", str(out), "--experiment", "auth-test",
                               "--tracking-uri", f"http://alice:{password}@127.0.0.1:{port}"],
                              capture_output=True, text=True, env=env, timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    for name in ("summary.json", "run.json", "utterances.jsonl", "utterances.csv"):
        if (out / name).exists():
            assert password not in (out / name).read_text(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracking"]["uri"] == f"http://127.0.0.1:{port}"
    assert _AuthProxy.expected in _AuthProxy.seen  # the credentials were used
    run = MlflowClient(tracking_uri=mlflow_server).get_run(summary["tracking"]["run_id"])
    assert password not in json.dumps(run.data.params) + json.dumps(run.data.tags)


@pytest.mark.slow
def test_sync_uploads_no_file_a_link_in_the_run_folder_points_at(tmp_path, sqlite_uri):
    from mlflow.tracking import MlflowClient

    out = finished_run(tmp_path, sqlite_uri)
    secret = tmp_path / "secret.txt"
    secret.write_text("the CI machine's private key")
    os.symlink(secret, out / "audio" / "notes.wav")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    proc = cli("sync", str(out), "--tracking-uri", other)
    assert proc.returncode == 2 and "notes.wav is a link" in one_line(proc)
    client = MlflowClient(tracking_uri=other)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
