"""The metric worker pool: audio-only metrics score in worker processes while the main process
synthesizes and transcribes, so DNSMOS (the costliest default metric) runs beside Whisper on
another core instead of after it.

Processes, not threads: pyin, DTW and DNSMOS's feature code hold the GIL for much of their
time. DNSMOS's sessions are pinned to one thread (metrics/quality.py), so on two cores one
worker takes one and Whisper, with one thread, the other. A worker runs exactly
the metric's own `score` on the very samples the main process would have passed: values are
identical to in-process scoring, and tests/test_workers.py proves it metric by metric.

A metric opts in with `process_safe = True` (a picklable instance whose `score` is a pure
function of its items); everything else, and everything that needs a transcript, scores in
the main process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from . import allocator, threads, trace
from .isolation import compute_scores, one_line
from .protocols import Metric
from .types import Score, ScoringItem

MAX_DEFAULT_WORKERS = 4  # past this, Whisper in the main process is the bottleneck anyway

_in_worker = False
_metrics: list[Metric] = []

Job = tuple[int, list[ScoringItem]]  # (metric index, items)
Outcome = Score | str  # a Score, or the one-line reason the metric failed on that item
Part = tuple[list[int], Future, ProcessPoolExecutor]  # item positions, their future, the pool it runs in


def in_worker() -> bool:
    """Whether this process is a metric worker."""
    return _in_worker


CPUS_ENV = "EVALKIT_CPUS"  # at most this many cores (a Ray actor's share of its node), if set


def cores() -> int:
    """The cores this process may use: its CPU affinity, at most $EVALKIT_CPUS."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get(CPUS_ENV, "")
    return max(1, min(n, int(limit))) if limit.isdigit() and int(limit) > 0 else n


def default_workers() -> int:
    """One worker per core beyond the first (the main process keeps one for Whisper)."""
    return max(0, min(cores() - 1, MAX_DEFAULT_WORKERS))


def pooled(metrics: Sequence[Metric]) -> list[Metric]:
    """The metrics that score in the pool: process-safe ones that need no transcript."""
    return [m for m in metrics if m.process_safe and not m.needs_transcript]


class MetricPool:
    """Worker processes, started on first use, each holding its own copy of `metrics`."""

    def __init__(self, metrics: Sequence[Metric], workers: int):
        self.metrics = list(metrics)
        self.workers = workers
        self.deaths = 0
        self._blob = pickle.dumps(self.metrics)
        self._pool: ProcessPoolExecutor | None = None
        self._ready: list[Future] = []  # start()'s warm-up answers, carrying the workers' start-up spans

    def start(self) -> None:
        """Spawn the workers now and have each load its metrics' models (Metric.load), so that
        start-up overlaps the caller's own (the adapter, the first synthesis) instead of waiting
        for the first chunk. Harmless to call again; a pool that is never started spawns on first use."""
        if self._pool is not None or not self.usable:
            return
        pool = self._executor()
        try:  # one task per worker: the pool spawns a process for each task that finds no idle one
            self._ready = [pool.submit(_ready) for _ in range(self.workers)]
        except BrokenProcessPool:
            self._died(pool)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the main process holds CTranslate2 and ONNX thread pools that fork would copy half-alive.
            # Workers spawned now inherit $EVALKIT_TRACE (evalkit.trace) and trace themselves.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_init, initargs=(self._blob,))
        return self._pool

    @property
    def usable(self) -> bool:
        """False once workers have died twice: the rest of the run scores in the main process."""
        return self.deaths < 2

    def submit(self, jobs: list[Job]) -> list[Part] | None:
        """Score `jobs` (their items dealt out across the workers); returns one Part per worker,
        whose future yields each job's outcomes at those positions. None: the pool is broken,
        score them here."""
        pool = self._executor()
        longest = max(len(items) for _, items in jobs)
        parts = []
        try:
            for w in range(min(self.workers, longest)):
                positions = list(range(w, longest, self.workers))
                part = [(i, [items[p] for p in positions if p < len(items)]) for i, items in jobs]
                parts.append((positions, pool.submit(_score, part), pool))
        except BrokenProcessPool:
            self._died(pool)
            return None
        return parts

    def collect(self, jobs: list[Job], parts: list[Part]) -> list[list[Outcome]]:
        """Outcomes per job, in item order. A worker that died (a crash in native code, the OOM
        killer) fails its items with a note, not the run; the next chunk gets a fresh pool."""
        out: list[list[Outcome]] = [[""] * len(items) for _, items in jobs]
        self._adopt_ready()
        for positions, future, pool in parts:
            try:
                with trace.span("wait for a metric worker", "wait"):
                    results, spans = future.result()
                trace.adopt(spans)  # the worker's own spans, recorded in its process
            except (BrokenProcessPool, CancelledError) as exc:
                self._died(pool)
                results = self._failed(jobs, positions, f"metric worker died: {one_line(exc)}")
            except Exception as exc:  # the items could not reach the worker (an unpicklable input)
                results = self._failed(jobs, positions, f"metric worker failed: {one_line(exc)}")
            for j, (_, items) in enumerate(jobs):
                for p, outcome in zip([p for p in positions if p < len(items)], results[j], strict=True):
                    out[j][p] = outcome
        return out

    def _adopt_ready(self) -> None:
        """The start-up spans of the workers that have answered start()'s warm-up."""
        for future in [f for f in self._ready if f.done()]:
            self._ready.remove(future)
            if not future.cancelled() and future.exception() is None:
                trace.adopt(future.result())

    def close(self, now: bool = False) -> None:
        """Stop the workers; `now` (an interrupt, or nothing left to collect) kills them instead of
        letting them finish."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not now:
            wait(self._ready)
        self._adopt_ready()
        self._ready = []
        if now:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        # Waited for even when killed (it is then quick): a pool left to shut down on its own races
        # the interpreter's exit, which writes to the pool's closed wake-up pipe ("Bad file descriptor").
        pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _failed(jobs: list[Job], positions: list[int], reason: str) -> list[list[Outcome]]:
        return [[reason] * sum(p < len(items) for p in positions) for _, items in jobs]

    def _died(self, pool: ProcessPoolExecutor | None) -> None:
        if pool is not None and pool is self._pool:  # counted once per pool, whatever was in flight
            self.deaths += 1
            self.close(now=True)


def _init(blob: bytes) -> None:
    global _in_worker, _metrics
    trace.worker_start()
    allocator.keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the main process, which stops us
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _in_worker = True
    with trace.span("load metrics (unpickle, imports)", "load"):
        _metrics = pickle.loads(blob)
    for metric in _metrics:
        # A load that fails is left to the metric's first score(), which fails its items with the reason.
        with trace.span(f"load {metric.name}", "load"), contextlib.suppress(Exception):
            metric.load()
    threads.one_blas_thread()  # after the loads: they bring the BLAS libraries it limits


def _ready() -> list[dict]:
    """start()'s warm-up task: the worker has loaded its metrics when it runs (its initializer)."""
    return trace.drain()


def _exit_with_parent(parent: int) -> None:
    """A killed main process never tells its workers, and they hold the write end of their own
    task queue, so they would wait forever: leave as soon as we are reparented."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _score(jobs: list[Job]) -> tuple[list[list[Outcome]], list[dict]]:
    """Each job's outcomes, and this worker's trace spans since its last answer (none untraced)."""
    out = []
    for i, items in jobs:
        with trace.span(f"metric {_metrics[i].name}", "metric", n=len(items)):
            out.append(compute_scores(_metrics[i], items) if items else [])
    return out, trace.drain()
