"""When and where the stages run: utterances in chunks, on three lanes.

Per chunk: the next chunk synthesizes on a thread; audio-only metrics that are process-safe
score this chunk in worker processes (evalkit.workers); this process transcribes it and scores
the rest. A chunk's rows are finished while the next chunk is transcribed, so the pool's work
overlaps Whisper's, and handed to `on_rows` as they finish: a crash loses at most the two
chunks in flight. Where a metric runs never changes its values (tests/test_workers.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import stages, threads, trace
from . import workers as workers_mod
from .isolation import chunks, compute_scores
from .progress import Progress
from .protocols import ASRBackend, Metric, TTSAdapter, declared
from .stages import Counts, Recorded, State
from .types import Row, Suite

CHUNK = 8  # utterances per step; at most two chunks are in flight, which is what a crash can cost
# The first chunk is smaller: Whisper and the metric workers start on the first clips instead of
# waiting for eight to be synthesized (a short suite's start-up is on everyone's path).
FIRST_CHUNK = 2


@dataclass(frozen=True)
class Evaluation:
    rows: list[Row]
    counts: Counts


def pool_workers(metrics: Sequence[Metric], workers: int | None, replaying: bool) -> int:
    """How many metric worker processes an evaluation starts (0: none, everything scores here).

    `workers` None is the default, one per core beyond the first. One worker only pays off
    beside work of our own (synthesis, Whisper); a re-score has none, and spawning a worker
    there costs more than it saves (20 clips: 11.7 s against 3.5 s)."""
    workers = workers_mod.default_workers() if workers is None else workers
    if not workers_mod.pooled(metrics) or workers < 1 or (replaying and workers == 1):
        return 0
    return workers


def metric_pool(metrics: Sequence[Metric], workers: int | None, replaying: bool) -> workers_mod.MetricPool | None:
    """The worker pool an evaluation of `metrics` uses (not started), or None when it uses none."""
    n = pool_workers(metrics, workers, replaying)
    return workers_mod.MetricPool(workers_mod.pooled([declared(m) for m in metrics]), n) if n else None


def whisper_threads(metrics: Sequence[Metric], workers: int | None, replaying: bool) -> int | None:
    """CPU threads for the ASR backend beside the metric pool, decided before it is built
    (evalkit.asr.resolve): the workers have their cores and Whisper gets the rest, at least one
    (on 2 cores, one Whisper thread beside one busy worker beat two contending ones: 20 clips
    end to end 36.5 s against 41.8 s). None without a pool: the backend's own default."""
    n = pool_workers(metrics, workers, replaying)
    return max(1, workers_mod.cores() - n) if n else None


def evaluate(suite: Suite, adapter: TTSAdapter | None, asr: ASRBackend | None, metrics: Sequence[Metric],
             out_dir: Path, progress: Progress | None = None,
             references: Mapping[str, Path] | None = None,
             on_rows: Callable[[list[Row]], None] | None = None,
             skip: frozenset[str] = frozenset(), workers: int | None = None,
             recorded: Recorded | None = None, pool: workers_mod.MetricPool | None = None,
             seed: int = 0, idle: Callable[[], None] | None = None) -> Evaluation:
    """Evaluate every utterance of `suite` not in `skip`; finished rows go to `on_rows` chunk by chunk.

    Audio-only metrics that are process-safe score in `workers` worker processes (default: one
    per core beyond the first; 0 scores everything here). With `recorded`, clips come from that
    run instead of `adapter`. A metric that does not derive from evalkit.protocols.Metric is seen
    through it (`declared`). The ASR backend is used as given: its threads are decided when it is
    built (`whisper_threads`). A `pool` given (a sweep's, whose workers keep their loaded
    metrics from one checkpoint to the next) is used instead of starting one, and left running. `seed`
    goes with every synthesis request (SynthesisRequest.seed). `idle` is called once, when this
    thread has nothing left to do but wait for the last chunk's pooled metrics (the runner imports
    MLflow there)."""
    progress = progress or Progress()
    metrics = [declared(m) for m in metrics]
    threads.one_blas_thread()  # the adapter, ASR and metrics of this process are loaded by now
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    states = [State(u) for u in suite.utterances if u.id not in skip]
    chunk_list = [states[:FIRST_CHUNK], *chunks(states[FIRST_CHUNK:], CHUNK)] if states else []
    counts = Counts()
    rows: list[Row] = []
    transcriber = asr if any(m.needs_transcript for m in metrics) else None
    needs_references = any(m.needs_reference for m in metrics)
    pooled = workers_mod.pooled(metrics)
    local = [m for m in metrics if m not in pooled]
    owned = pool is None
    if not pool_workers(metrics, workers, recorded is not None):
        pool = None
    elif pool is None:
        pool = metric_pool(metrics, workers, recorded is not None)

    made = "replay" if recorded is not None else "synthesize"
    done = partial(progress.advance, stage=made)
    make: Callable[[list[State]], None]
    if recorded is not None:
        make = partial(stages.replay, recorded=recorded, audio_dir=audio_dir, done=done)
    elif adapter is not None:
        make = partial(stages.synthesize, adapter=adapter, language=suite.language, audio_dir=audio_dir, done=done,
                       seed=seed)
    else:
        raise ValueError("evaluate needs an adapter or a recorded run")

    def produce(chunk: list[State]) -> None:  # what the synthesis thread runs, a span per chunk
        with trace.span(f"{made} chunk", "synthesis", n=len(chunk)):
            make(chunk)

    def finish(chunk: list[State], pooled_work: PooledScoring) -> None:
        with trace.span("collect pooled metrics", "metric", n=len(chunk)):
            pooled_work.finish(counts)
        done = [s.row() for s in chunk]
        for s in chunk:  # the clip is on disk; keep memory flat over long suites
            s.release()
        rows.extend(done)
        if on_rows is not None:
            on_rows(done)
        progress.advance(len(chunk), stage="evaluate")

    progress.start(made, len(states))
    progress.start("evaluate", len(states))
    previous: tuple[list[State], PooledScoring] | None = None
    interrupted = True
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-synth") as synth:
            if chunk_list:
                ahead = synth.submit(produce, chunk_list[0])
            for i, chunk in enumerate(chunk_list):
                span = f"{chunk[0].utterance.id}..{chunk[-1].utterance.id}" if len(chunk) > 1 else chunk[0].utterance.id
                with trace.span(f"chunk {i}", "chunk", utterances=span):
                    with trace.span("wait for synthesis", "wait"):  # the main thread idles here
                        ahead.result()
                    if i + 1 < len(chunk_list):  # the next chunk synthesizes while this one is scored
                        ahead = synth.submit(produce, chunk_list[i + 1])
                    if previous is not None and previous[1].done:  # its rows need not wait for this chunk's
                        finish(*previous)
                        previous = None
                    alive = [s for s in chunk if s.failure is None]
                    if needs_references:
                        with trace.span("load references", "read"):
                            stages.load_references(alive, references or {})
                    with trace.span("plan pooled metrics (cache, inputs)", "metric"):
                        pooled_work = PooledScoring.plan(alive, pooled, suite.language, counts)
                    pooled_work.start(pool)
                    if transcriber is not None:
                        progress.doing(f"transcribing {span}" + ("" if i else " (once the ASR model has loaded)"))
                        with trace.span("transcribe", "asr", n=len(alive)):
                            stages.transcribe(alive, transcriber, suite.language, counts)
                    for metric in local:
                        progress.doing(f"scoring {span}: {metric.name}")
                        with trace.span(f"metric {metric.name}", "metric", n=len(alive)):
                            stages.score(alive, metric, suite.language, counts)
                    if previous is not None:
                        finish(*previous)
                        previous = None
                    if pooled_work.in_flight:  # finished after the next chunk's transcription
                        previous = (chunk, pooled_work)
                    else:
                        finish(chunk, pooled_work)
            if previous is not None:
                if idle is not None:
                    with trace.span("while the workers finish", "idle"):
                        idle()
                finish(*previous)
        interrupted = False
    finally:
        if pool is not None and (owned or interrupted):
            pool.close(now=interrupted)
    return Evaluation(rows, counts)


@dataclass
class PooledScoring:
    """The pooled metrics' work for one chunk, in three explicit steps: `plan` applies cache hits
    and builds the misses' inputs, `start` hands them to the worker pool (or, with none usable,
    scores them here at once), `finish` collects the outcomes and applies them."""

    work: list[stages.ScoringWork]
    jobs: list[workers_mod.Job]  # per work: (its metric's position among the pooled metrics, its items)
    pool: workers_mod.MetricPool | None = None  # where the jobs run, once started there
    parts: list[workers_mod.Part] | None = None  # their handles in that pool while in flight
    outcomes: list[list[workers_mod.Outcome]] | None = None  # scored here instead

    @classmethod
    def plan(cls, states: list[State], metrics: Sequence[Metric], language: str, counts: Counts) -> PooledScoring:
        planned = [(i, stages.from_cache(states, m, language, counts)) for i, m in enumerate(metrics)]
        planned = [(i, w) for i, w in planned if w.states]
        return cls([w for _, w in planned], [(i, stages.items(w, language)) for i, w in planned])

    def start(self, pool: workers_mod.MetricPool | None) -> None:
        if self.jobs and pool is not None and pool.usable:
            with trace.span("submit to the metric workers (spawned on first use)", "metric"):
                self.pool, self.parts = pool, pool.submit(self.jobs)
        if self.parts is None:  # no pool, or it is broken: score here, now
            self.outcomes = []
            for w, (_, items) in zip(self.work, self.jobs, strict=True):
                with trace.span(f"metric {w.metric.name}", "metric", n=len(items)):
                    self.outcomes.append(compute_scores(w.metric, items))

    @property
    def in_flight(self) -> bool:
        return self.parts is not None

    @property
    def done(self) -> bool:
        """Whether `finish` would not wait."""
        return self.parts is None or all(future.done() for _, future, _ in self.parts)

    def finish(self, counts: Counts) -> None:
        if self.pool is not None and self.parts is not None:
            outcomes = self.pool.collect(self.jobs, self.parts)
        elif self.outcomes is not None:
            outcomes = self.outcomes
        else:
            raise RuntimeError("PooledScoring.finish before start")
        for w, results in zip(self.work, outcomes, strict=True):
            stages.store(w, results, counts)
