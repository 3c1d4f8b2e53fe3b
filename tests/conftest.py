"""Shared fixtures: real models loaded once per session, real MLflow stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The commands these tests run are not on a terminal, where evalkit writes progress lines to
# stderr; tests that count stderr lines count messages, so progress is off unless a test (in
# tests/test_progress.py) turns it back on.
os.environ["EVALKIT_PROGRESS"] = "off"


PLUGIN = Path(__file__).resolve().parent / "plugins" / "tiny_tts"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """A fresh evalkit cache per session: cached transcripts from earlier sessions prove nothing."""
    path = tmp_path_factory.mktemp("evalkit-cache")
    old = os.environ.get("EVALKIT_CACHE")
    os.environ["EVALKIT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EVALKIT_CACHE", None)
    else:
        os.environ["EVALKIT_CACHE"] = old


@pytest.fixture(scope="session")
def asr(private_cache):
    """Whisper base (faster-whisper, bundled weights), loaded once for the whole session."""
    from evalkit.asr import resolve

    return resolve("faster-whisper:base", "cpu")


@pytest.fixture(scope="session")
def piper():
    from evalkit.adapters.piper import PiperAdapter

    adapter = PiperAdapter("piper:joe")
    yield adapter
    adapter.close()


@pytest.fixture(scope="session")
def espeak_en():
    from evalkit.adapters.espeak import EspeakAdapter

    adapter = EspeakAdapter("espeak:en-us")
    yield adapter
    adapter.close()


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on 127.0.0.1 over a sqlite store in root; waits for /health."""
    port = port or _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # The server's background job runners (huey consumers) burn CPU all session and serve nothing here.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(root / "server.log", "a") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120  # 11-25 s measured; poll, never sleep blindly
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited early: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError("mlflow server did not answer /health within 120 s")


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group; workers linger after the main process, so wait for all."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for _ in range(60):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop_mlflow_server(proc)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (a fresh process)."""
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_tts(tmp_path_factory):
    """The test plugin, as scripts/setup.sh installs it. Without that (a venv set up some other way), it is
    installed for this session only: into a folder under tmp, on sys.path here and on PYTHONPATH for the
    fresh processes, never into the venv."""
    from evalkit import plugins

    with pytest.MonkeyPatch.context() as mp:
        registered = plugins.registered(plugins.ADAPTERS)
        if (registered.get("tiny-tts", ("",))[0] != "tiny_tts:TinyTTS"
                or registered.get("degraded-piper", ("",))[0] != "tiny_tts:DegradedPiper"):
            source = shutil.copytree(PLUGIN, tmp_path_factory.mktemp("tiny-tts-src") / "tiny_tts")  # builds there
            site = tmp_path_factory.mktemp("tiny-tts-site")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                            "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
                           check=True, capture_output=True)
            mp.syspath_prepend(str(site))  # also invalidates the import caches
            mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        import tiny_tts

        found = plugins.registered(plugins.ADAPTERS)
        assert {"torch", "torchscript", "tiny-tts", "degraded-piper"} <= set(found), \
            f"adapters not registered: {sorted(found)}"
        assert found["tiny-tts"][0] == "tiny_tts:TinyTTS"
        yield tiny_tts


def run_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process, so the session's Whisper is reused (the ASR factory caches it)."""
    from evalkit import cli

    old = sys.argv
    sys.argv = ["evalkit", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err
