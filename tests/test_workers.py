"""The metric worker pool changes where metrics run, never what they give: real Piper and espeak
clips, every built-in audio metric, compared value for value with in-process scoring."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from evalkit import pipeline, workers
from evalkit.isolation import compute_scores
from evalkit.types import Audio, Score, ScoringItem, Suite, SynthesisRequest, Utterance
from evalkit_metrics.alignment import MCD, MelDTW
from evalkit_metrics.intelligibility import Intelligibility
from evalkit_metrics.prosody import F0
from evalkit_metrics.quality import DNSMOS, PESQ, STOI
from evalkit_metrics.speaker import SpeakerSimilarity

TEXTS = ["The old man sat on the red bench in the park.", "Please call Stella.", "It is raining again today."]


def same(a: Score | str, b: Score | str) -> bool:
    """Exactly equal, NaN equal to NaN."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.note == b.note and a.values.keys() == b.values.keys() and all(
        (math.isnan(a.values[k]) and math.isnan(b.values[k])) or a.values[k] == b.values[k] for k in a.values)


@pytest.fixture(scope="module")
def items(piper, espeak_en):
    from evalkit.audio import as_pcm16, resample

    out = []
    rng = np.random.default_rng(0)
    for i, text in enumerate(TEXTS):
        clip = resample(as_pcm16(piper.synthesize([SynthesisRequest(f"u{i}", text, "en")])[0]), 16000)
        # Alternating references: another voice (DTW-aligned metrics), and the same clip with noise
        # (time-aligned, so PESQ and STOI apply too).
        if i % 2:
            noisy = clip.samples + rng.normal(0, 0.01, clip.samples.shape).astype(np.float32)
            ref = Audio(np.clip(noisy, -1, 1).astype(np.float32), 16000)
        else:
            ref = resample(espeak_en.synthesize([SynthesisRequest(f"u{i}", text, "en")])[0], 16000)
        out.append(ScoringItem(Utterance(f"u{i}", text), "en", clip, reference_audio=ref))
    return out


@pytest.mark.slow
def test_every_pooled_metric_gives_exactly_the_in_process_values(items):
    metrics = [DNSMOS(), PESQ(), STOI(), MelDTW(), MCD(), F0(), SpeakerSimilarity()]
    assert workers.pooled(metrics) == metrics
    here = [compute_scores(m, items) for m in metrics]
    pool = workers.MetricPool(metrics, 2)  # two workers: items are dealt out and put back in order
    try:
        jobs = [(i, list(items)) for i in range(len(metrics))]
        there = pool.collect(jobs, pool.submit(jobs))
    finally:
        pool.close()
    for m, a, b in zip(metrics, here, there, strict=True):
        assert all(same(x, y) for x, y in zip(a, b, strict=True)), (m.name, a, b)
    # and the values are real ones, not NaN on both sides
    by_name = {m.name: scores for m, scores in zip(metrics, here, strict=True)}
    assert 1 < by_name["dnsmos"][0].values["dnsmos_ovrl"] < 5
    assert by_name["stoi"][1].values["stoi"] > 0.9  # the clip against itself with faint noise
    assert by_name["mel_dtw"][0].values["mel_dtw"] > 0


@pytest.mark.slow
def test_dnsmos_in_a_worker_is_the_library_call(items):
    """A worker's DNSMOS is speechmos's own model, sessions pinned to one thread, to the last bit."""
    from test_dnsmos import library

    pool = workers.MetricPool([DNSMOS()], 1)
    try:
        jobs = [(0, list(items))]
        there = pool.collect(jobs, pool.submit(jobs))[0]
    finally:
        pool.close()
    model = library(1)
    for item, score in zip(items, there, strict=True):
        r = model(np.clip(item.audio.samples, -1, 1).astype(np.float32), 16000, False)
        assert score.values == {"dnsmos_sig": float(r["sig_mos"]), "dnsmos_bak": float(r["bak_mos"]),
                                "dnsmos_ovrl": float(r["ovrl_mos"]), "dnsmos_p808": float(r["p808_mos"])}


@pytest.mark.slow
def test_whisper_thread_count_never_changes_a_transcript(items):
    from evalkit.asr.faster_whisper import FasterWhisperASR

    texts = {}
    for threads in (1, 2):
        asr = FasterWhisperASR("base", threads=threads)
        texts[threads] = [t.text for t in asr.transcribe([i.audio for i in items], "en")]
    assert texts[1] == texts[2]
    assert "bench" in texts[1][0].lower()


@pytest.mark.slow
def test_evaluate_with_and_without_workers_gives_the_same_rows(tmp_path, piper, asr, monkeypatch):
    suite = Suite("t", "1", "en", "test", tuple(Utterance(f"u{i}", t) for i, t in enumerate(TEXTS)), "d", "mem")
    rows = {}
    for n in (0, 1):
        monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / f"cache{n}"))  # both compute everything
        ev = pipeline.evaluate(suite, piper, asr, [Intelligibility(), DNSMOS()], tmp_path / f"out{n}", workers=n)
        assert ev.counts.scores_computed == 2 * len(TEXTS) and ev.counts.scores_cached == 0
        rows[n] = ev.rows
    timing = {"synth_seconds", "rtf"}
    for a, b in zip(rows[0], rows[1], strict=True):
        assert {k: v for k, v in a.values.items() if k not in timing} == \
               {k: v for k, v in b.values.items() if k not in timing}
        assert a.texts == b.texts and a.notes == b.notes and a.failure == b.failure
        assert 1 < a.values["dnsmos_ovrl"] < 5


class Tones:
    """Clean tones, one per request: the death test isolates the pool, not speech."""

    name = "tones"
    batch_size = 8

    def synthesize(self, requests):
        t = np.arange(8000) / 16000
        return [Audio((0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.float32), 16000)
                for i, _ in enumerate(requests)]


class DiesInWorkers:
    """A metric whose worker process dies (as on a segfault); in the main process it scores 1."""

    name = "dies"
    version = "1"
    sample_rate = 16000
    needs_transcript = False
    needs_reference = False
    process_safe = True
    higher_is_better = {"dies": True}

    def score(self, items):
        if workers.in_worker():
            os._exit(3)
        return [Score({"dies": 1.0}) for _ in items]


def test_a_worker_that_dies_fails_its_items_not_the_run(tmp_path):
    n = 5 * pipeline.CHUNK
    suite = Suite("t", "1", "en", "test", tuple(Utterance(f"u{i:02d}", f"tone {i}") for i in range(n)), "d", "mem")
    rows = pipeline.evaluate(suite, Tones(), None, [DiesInWorkers()], tmp_path, workers=1).rows
    assert [r.utterance_id for r in rows] == [f"u{i:02d}" for i in range(n)]
    died = [r for r in rows if any("metric worker died" in note for note in r.notes)]
    assert rows[0] in died and all(math.isnan(r.values["dies"]) for r in died)
    assert all(r.values["dies"] == 1.0 for r in rows if r not in died)
    assert rows[-1].values["dies"] == 1.0  # after two deaths the rest scores in the main process
    assert all(r.failure is None for r in rows)


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _gone(pids: set[int], timeout: float) -> bool:
    deadline = time.time() + timeout
    while any(_alive(p) for p in pids):
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_interrupting_a_run_leaves_no_worker_behind(tmp_path, sqlite_uri, how):
    from test_hardening import wait_for_rows

    out = tmp_path / "run"
    env = dict(os.environ, EVALKIT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "espeak:en-us",
                             "--limit", "24", "--metrics", "intelligibility,dnsmos", "--workers", "1",
                             "--out", str(out), "--tracking-uri", sqlite_uri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_rows(out, proc, 8)
    workers_seen = _children(proc.pid)
    assert workers_seen, "no worker process while DNSMOS was scoring"
    proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    if how == "ctrl-c":
        assert proc.returncode == 130
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
    assert _gone(workers_seen, 30), "worker processes outlived the run"
