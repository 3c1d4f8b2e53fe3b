"""Start-up overlapped with the work (evalkit/runner.py, workers.py, asr/__init__.py, cli.py):
workers load their metrics before the first clip, Whisper loads on a thread that transcription
waits for, one BLAS thread per process, a small first chunk, and an exit that skips the
interpreter's teardown but nothing a run writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import Tones

from evalkit import asr as asr_mod
from evalkit import pipeline, schedule, workers
from evalkit.protocols import Metric
from evalkit.types import Audio, Score, ScoringItem, Suite, Utterance


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


class LoadsFirst(Metric):
    """Writes its process id to `marker` when loaded; scores whether it was loaded before its
    first item, and how many BLAS threads its process has."""

    name = "loads_first"
    version = "1"
    sample_rate = 16000
    process_safe = True
    higher_is_better = {"loaded_before": None, "blas_threads": None}

    def __init__(self, marker: str = "") -> None:
        self.marker = marker
        self.loaded = False

    def load(self) -> None:
        import scipy.linalg  # noqa: F401  # SciPy's own BLAS, loaded after numpy's: both are limited

        self.loaded = True
        Path(self.marker).write_text(str(os.getpid()))

    def score(self, items):
        return [Score({"loaded_before": float(self.loaded), "blas_threads": float(_blas_threads())}) for _ in items]


class FailsToLoad(Metric):
    name = "fails_to_load"
    version = "1"
    sample_rate = 16000
    process_safe = True
    higher_is_better = {"fails_to_load": True}

    def load(self) -> None:
        raise RuntimeError("weights missing")

    def score(self, items):
        raise RuntimeError("weights missing")


def _item() -> ScoringItem:
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    return ScoringItem(Utterance("u", "tone"), "en", Audio(tone, 16000))


def _wait_for(path: Path, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_started_workers_load_their_metrics_before_any_item(tmp_path):
    marker = tmp_path / "loaded"
    pool = workers.MetricPool([LoadsFirst(marker=str(marker)), FailsToLoad()], 1)
    try:
        pool.start()
        pool.start()  # a second start is nothing
        # Nothing submitted yet: the worker spawned and loaded on start() alone.
        assert _wait_for(marker)
        assert int(marker.read_text()) != os.getpid()
        jobs = [(0, [_item()]), (1, [_item()])]
        loads, fails = pool.collect(jobs, pool.submit(jobs))
    finally:
        pool.close()
    assert loads[0].values == {"loaded_before": 1.0, "blas_threads": 1.0}
    # A load that fails costs that metric's items, with the reason, never the worker.
    assert isinstance(fails[0], str) and "weights missing" in fails[0]
    assert pool.deaths == 0


def test_an_evaluation_limits_this_process_to_one_blas_thread(tmp_path):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        assert _blas_threads() == 2
        suite = Suite("t", "1", "en", "test", (Utterance("u0", "tone 0"),), "d", "mem")
        pipeline.evaluate(suite, Tones(), None, [LoadsFirst(marker=str(tmp_path / "m"))], tmp_path / "run", workers=0)
        assert _blas_threads() == 1


def test_the_first_chunk_is_small_and_every_utterance_is_scored_once(tmp_path):
    n = schedule.FIRST_CHUNK + 2 * schedule.CHUNK + 3
    suite = Suite("t", "1", "en", "test", tuple(Utterance(f"u{i:02d}", f"tone {i}") for i in range(n)), "d", "mem")
    batches: list[int] = []
    pipeline.evaluate(suite, Tones(), None, [], tmp_path, workers=0,
                      on_rows=lambda rows: batches.append(len(rows)))
    assert batches == [schedule.FIRST_CHUNK, schedule.CHUNK, schedule.CHUNK, 3]


class SlowToLoad:
    """An ASR backend whose load() waits for the test, on whatever thread calls it."""

    name = "slow"

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.loaded_on: str | None = None
        self.fail = fail

    def load(self) -> None:
        self.release.wait(60)
        if self.fail:
            raise RuntimeError("no weights")
        self.loaded_on = threading.current_thread().name


def test_preload_loads_the_asr_model_on_its_own_thread():
    asr = SlowToLoad()
    thread = asr_mod.preload(asr)  # type: ignore[arg-type]  # the protocol's shape, load() included
    assert thread is not None and thread.is_alive() and asr.loaded_on is None
    asr.release.set()
    thread.join(60)
    assert asr.loaded_on == "evalkit-asr-load"
    failing = SlowToLoad(fail=True)
    failing.release.set()
    thread = asr_mod.preload(failing)  # type: ignore[arg-type]
    assert thread is not None
    thread.join(60)  # the failure is left to the first transcribe, which reports it per utterance
    assert not thread.is_alive() and failing.loaded_on is None
    assert asr_mod.preload(object()) is None  # type: ignore[arg-type]  # nothing to load ahead


@pytest.mark.slow
def test_whisper_loaded_on_a_thread_is_the_model_transcription_uses():
    from evalkit.asr.faster_whisper import FasterWhisperASR

    asr = FasterWhisperASR("base", threads=1)
    thread = asr_mod.preload(asr)
    assert thread is not None
    model = asr.model  # waits for the thread's load instead of loading a second copy
    thread.join(60)
    assert asr.model is model


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)


def test_leave_runs_atexit_handlers_and_flushes_before_exiting():
    done = _python("import atexit, sys\n"
                   "atexit.register(lambda: print('atexit ran'))\n"
                   "from evalkit.cli import leave\n"
                   "print('buffered', end=' ')\n"
                   "sys.stderr.write('to stderr')\n"
                   "leave(3)\n")
    assert done.returncode == 3
    assert done.stdout == "buffered atexit ran\n" and done.stderr == "to stderr"


def test_leave_waits_for_a_thread_still_working():
    done = _python("import threading, time\n"
                   "from evalkit.cli import leave\n"
                   "def work():\n"
                   "    time.sleep(0.5)\n"
                   "    print('thread finished', flush=True)\n"
                   "threading.Thread(target=work).start()\n"
                   "leave(4)\n")
    assert done.returncode == 4 and done.stdout == "thread finished\n"


def test_the_console_script_exit_status_is_mains(tmp_path):
    """`python -m evalkit` goes through entry(): a usage error is still 2, a success 0."""
    bad = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "no-such-suite", "espeak:en-us"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown suite")
    ok = subprocess.run([sys.executable, "-m", "evalkit", "suites"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and "ko-base" in ok.stdout
