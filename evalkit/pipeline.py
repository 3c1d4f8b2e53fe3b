"""One evaluation: synthesize -> check -> transcribe once -> score -> aggregate.

Utterances stream through in chunks: each chunk is synthesized (the next chunk's synthesis
overlaps this chunk's scoring on a thread), transcribed, scored by every metric (audio-only
ones in worker processes, see evalkit.workers), and handed to `on_rows` as finished rows, so a
crash loses at most the two chunks in flight. Every
stage is a function of its inputs (no global state). A failure inside a stage becomes a
recorded failure of that utterance, never a lost run: batches that raise are retried one
utterance at a time. Transcripts and metric values are cached by content, so re-scoring
recomputes only what changed.
"""

from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from . import audio as audio_mod
from . import cache as cache_mod
from . import record, textnorm
from . import workers as workers_mod
from .errors import EvalkitError
from .isolation import chunks, compute_scores, isolated, one_each, one_line
from .protocols import ASRBackend, Metric, TTSAdapter
from .types import Audio, Row, Score, ScoringItem, Suite, SynthesisRequest, Transcript, Utterance

ASR_SAMPLE_RATE = 16000
ASR_BATCH = 8
CHUNK = 8  # utterances per step; at most two chunks are in flight, which is what a crash can cost


class Progress:
    """What the pipeline reports to a UI; the default reports nothing."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


@dataclass
class _State:
    """Mutable per-utterance working state; frozen into a Row when its chunk is done."""

    utterance: Utterance
    audio: Audio | None = None
    audio_path: str | None = None
    transcript: Transcript | None = None
    values: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    reference: Audio | None = None
    prompt: Audio | None = None  # the speaker's prompt clip, for metrics that accept one
    _resampled: dict[tuple[str, int], Audio] = field(default_factory=dict)
    _digests: dict[str, str] = field(default_factory=dict)

    def audio_at(self, sample_rate: int) -> Audio:
        """The clip at `sample_rate`, resampled at most once per rate."""
        return self._at("audio", self.audio, sample_rate)

    def reference_for(self, metric: Metric) -> str | None:
        """Which clip `metric` compares against: the reference, else (if it accepts one) the
        speaker prompt."""
        if self.reference is not None:
            return "reference"
        if self.prompt is not None and getattr(metric, "accepts_speaker_prompt", False):
            return "prompt"
        return None

    def clip_at(self, which: str, sample_rate: int) -> Audio:
        return self._at(which, getattr(self, which), sample_rate)

    def _at(self, which: str, audio: Audio, sample_rate: int) -> Audio:
        if (which, sample_rate) not in self._resampled:
            self._resampled[(which, sample_rate)] = audio_mod.resample(audio, sample_rate)
        return self._resampled[(which, sample_rate)]

    def digest(self, which: str) -> str:
        """Content hash of the clip, its reference or its prompt (native rate), computed once."""
        if which not in self._digests:
            clip = getattr(self, which)
            self._digests[which] = cache_mod.audio_digest(clip) if clip is not None else ""
        return self._digests[which]

    def row(self) -> Row:
        return Row(self.utterance.id, self.utterance.text, self.utterance.tags, dict(self.values),
                   dict(self.texts), self.audio_path, self.failure, tuple(self.notes))


@dataclass
class Counts:
    """What came from the caches and what was computed, for the run summary."""

    transcripts_cached: int = 0
    transcripts_computed: int = 0
    scores_cached: int = 0
    scores_computed: int = 0


@dataclass(frozen=True)
class Recorded:
    """A finished run's clips, scored again instead of synthesized (`evalkit rescore`)."""

    folder: Path
    rows: Mapping[str, dict]  # utterance id -> its row in the run's utterances.jsonl


@dataclass(frozen=True)
class Evaluation:
    rows: list[Row]
    counts: Counts


def evaluate(suite: Suite, adapter: TTSAdapter | None, asr: ASRBackend | None, metrics: Sequence[Metric],
             out_dir: Path, progress: Progress | None = None,
             references: Mapping[str, Path] | None = None,
             on_rows: Callable[[list[Row]], None] | None = None,
             skip: frozenset[str] = frozenset(), workers: int | None = None,
             recorded: Recorded | None = None) -> Evaluation:
    """Evaluate every utterance of `suite` not in `skip`; finished rows go to `on_rows` chunk by chunk.

    Per chunk, on three lanes: the next chunk synthesizes on a thread; audio-only metrics that
    are process-safe score this chunk in `workers` worker processes (default: one per core
    beyond the first; 0 scores everything here); this process transcribes it and scores the
    rest. A chunk's rows are finished while the next chunk is transcribed, so the pool's work
    overlaps Whisper's. With `recorded`, clips come from that run instead of `adapter`."""
    progress = progress or Progress()
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    states = [_State(u) for u in suite.utterances if u.id not in skip]
    chunk_list = list(chunks(states, CHUNK))
    counts = Counts()
    rows: list[Row] = []
    needs_transcript = asr is not None and any(m.needs_transcript for m in metrics)
    pooled = workers_mod.pooled(metrics)
    local = [m for m in metrics if m not in pooled]
    pool = _metric_pool(pooled, workers, recorded is not None, asr)

    def finish(chunk: list[_State], pending: _Pending) -> None:
        pending.finish()
        done = [s.row() for s in chunk]
        for s in chunk:  # the clip is on disk; keep memory flat over long suites
            s.audio, s.reference, s.prompt, s._resampled = None, None, None, {}
        rows.extend(done)
        if on_rows is not None:
            on_rows(done)
        progress.advance(len(chunk))

    def make(chunk: list[_State]) -> None:
        if recorded is not None:
            replay(chunk, recorded, audio_dir)
        else:
            synthesize(chunk, adapter, suite.language, audio_dir)

    progress.start("evaluate", len(states))
    previous: tuple[list[_State], _Pending] | None = None
    interrupted = True
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-synth") as synth:
            ahead = synth.submit(make, chunk_list[0]) if chunk_list else None
            for i, chunk in enumerate(chunk_list):
                ahead.result()
                if i + 1 < len(chunk_list):  # the next chunk synthesizes while this one is scored
                    ahead = synth.submit(make, chunk_list[i + 1])
                alive = [s for s in chunk if s.failure is None]
                if any(m.needs_reference for m in metrics):
                    load_references(alive, references or {})
                pending = _Pending(alive, pooled, suite.language, counts, pool)
                if needs_transcript:
                    transcribe(alive, asr, suite.language, counts)
                for metric in local:
                    score(alive, metric, suite.language, counts)
                if previous is not None:
                    finish(*previous)
                    previous = None
                if pending.in_flight:  # finished after the next chunk's transcription
                    previous = (chunk, pending)
                else:
                    finish(chunk, pending)
            if previous is not None:
                finish(*previous)
        interrupted = False
    finally:
        if pool is not None:
            pool.close(now=interrupted)
    return Evaluation(rows, counts)


def _metric_pool(pooled: list[Metric], workers: int | None, replaying: bool,
                 asr: ASRBackend | None) -> workers_mod.MetricPool | None:
    workers = workers_mod.default_workers() if workers is None else workers
    # One worker only pays off beside work of our own (synthesis, Whisper); a re-score has none,
    # and spawning a worker there costs more than it saves (20 clips: 11.7 s against 3.5 s).
    if not pooled or workers < 1 or (replaying and workers == 1):
        return None
    if asr is not None and getattr(asr, "threads", 0) is None:
        # The workers have their cores: Whisper gets the rest (on 2 cores, one Whisper thread
        # beside one busy worker beat two contending ones: 20 clips end to end 36.5 s against 41.8 s).
        asr.threads = max(1, workers_mod.cores() - workers)
    return workers_mod.MetricPool(pooled, workers)


def synthesize(states: list[_State], adapter: TTSAdapter, language: str, audio_dir: Path) -> None:
    size = max(1, int(getattr(adapter, "batch_size", 1)))

    def timed(reqs: list[SynthesisRequest]) -> list[tuple[Audio, float]]:
        t0 = time.perf_counter()
        clips = one_each(adapter.synthesize)(reqs)
        seconds = time.perf_counter() - t0
        # A batch's time is shared out by duration: every clip of a batch gets the batch's RTF.
        total = sum(c.duration for c in clips)
        return [(c, seconds * c.duration / total if total > 0 else seconds / len(clips)) for c in clips]

    for batch in chunks(states, size):
        requests = [SynthesisRequest(s.utterance.id, s.utterance.text, language, s.utterance.speaker) for s in batch]
        for s, outcome in zip(batch, isolated(timed, requests), strict=True):
            if isinstance(outcome, BaseException):
                s.failure = f"synthesis failed: {one_line(outcome)}"
            else:
                _accept_audio(s, *outcome, audio_dir)


# What the synthesis stage records per utterance: carried over unchanged when a run is re-scored.
SYNTHESIS_KEYS = ("duration_s", "peak", "clip_ratio", "lead_silence_s", "trail_silence_s", "synth_seconds", "rtf")


def replay(states: list[_State], recorded: Recorded, audio_dir: Path) -> None:
    """The synthesis stage of a re-score: each clip, its synthesis facts and any synthesis failure
    exactly as the recorded run saved them (the saved wav is the very samples it scored)."""
    for s in states:
        row = recorded.rows.get(s.utterance.id)
        if row is None:
            s.failure = "not in the recorded run"
            continue
        s.values.update({k: math.nan if row[k] is None else float(row[k]) for k in SYNTHESIS_KEYS if k in row})
        if row.get("failure"):
            s.failure = row["failure"]
            continue
        source = recorded_audio(recorded.folder, row)
        try:
            s.audio = audio_mod.read_wav(source, audio_mod.duration_cap(s.utterance.text))
            shutil.copyfile(source, audio_dir / source.name)
        except OSError:  # our own folder refused the copy (disk full): the runner says how to resume
            raise
        except Exception as exc:  # a damaged or missing wav costs its utterance, not the re-score
            s.audio, s.failure = None, f"recorded audio unreadable: {one_line(exc)}"
            continue
        s.audio_path = str(Path("audio") / source.name)


def recorded_audio(folder: Path, row: dict) -> Path:
    """A recorded row's clip, inside the run's own audio/ (checked for every row before a re-score starts)."""
    path = record.audio_file(folder, row)
    if path is None:
        raise EvalkitError(f"{folder}: utterance {row.get('id')!r} has no failure and no audio")
    return path


def _accept_audio(s: _State, clip: Audio, seconds: float, audio_dir: Path) -> None:
    failure, facts = audio_mod.check(clip, audio_mod.duration_cap(s.utterance.text))
    s.values.update(facts)
    s.values["synth_seconds"] = seconds
    if failure:
        s.failure = failure
        return
    s.values["rtf"] = seconds / clip.duration
    s.audio = audio_mod.as_pcm16(clip)
    path = audio_dir / f"{s.utterance.id}.wav"
    audio_mod.write_wav(path, s.audio)
    s.audio_path = str(Path("audio") / path.name)


def transcribe(states: list[_State], asr: ASRBackend, language: str, counts: Counts) -> None:
    """Transcribe each clip once per (audio, ASR settings, language), ever: results are cached by
    content (backends load their model on first use, so a fully cached run never loads it)."""
    store = cache_mod.JsonCache("transcripts")
    info = asr.describe()  # once per chunk, not twice per utterance
    settings = info.get("settings_digest") or repr(sorted(info.items()))
    keys = {id(s): cache_mod.key("transcript", s.digest("audio"), settings, language) for s in states}
    todo = []
    for s in states:
        hit = store.get(keys[id(s)])
        if hit is not None:
            _accept_transcript(s, Transcript(hit["text"], language), language)
            counts.transcripts_cached += 1
        else:
            todo.append(s)
    for batch in chunks(todo, ASR_BATCH):
        clips = [s.audio_at(ASR_SAMPLE_RATE) for s in batch]
        for s, outcome in zip(batch, isolated(one_each(lambda a: asr.transcribe(a, language)), clips), strict=True):
            if isinstance(outcome, BaseException):
                s.notes.append(f"asr failed: {one_line(outcome)}")
                continue
            store.put(keys[id(s)], {"text": outcome.text})
            _accept_transcript(s, outcome, language)
            counts.transcripts_computed += 1


def _accept_transcript(s: _State, transcript: Transcript, language: str) -> None:
    s.transcript = transcript
    s.texts["transcript"] = transcript.text
    s.texts["text_norm"] = textnorm.normalize(s.utterance.text, language)
    s.texts["transcript_norm"] = textnorm.normalize(transcript.text, language)


def load_references(states: list[_State], references: Mapping[str, Path]) -> None:
    """Each utterance's reference (from `references`) and speaker prompt (from the suite)."""
    for s in states:
        for which, path in (("reference", references.get(s.utterance.id)), ("prompt", s.utterance.speaker_prompt)):
            if path is None:
                continue
            try:
                clip = audio_mod.read_wav(path, audio_mod.MAX_S)
            except Exception as exc:  # one unreadable file costs one utterance its reference metrics
                s.notes.append(f"{which} unreadable: {one_line(exc)}")
                continue
            failure, _ = audio_mod.check(clip)
            if failure:
                s.notes.append(f"{which} unusable: {failure}")
            else:
                setattr(s, which, clip)


def score(states: list[_State], metric: Metric, language: str, counts: Counts) -> None:
    """Score `states` with `metric` in this process (cache first)."""
    todo, keys = _from_cache(states, metric, language, counts)
    _store(todo, keys, metric, compute_scores(metric, _items(todo, metric, language)), counts)


class _Pending:
    """Pooled metrics' work for one chunk: cache hits are applied at once, misses are scored by
    the worker pool (or here, without one) and applied by `finish`."""

    def __init__(self, states: list[_State], metrics: Sequence[Metric], language: str, counts: Counts,
                 pool: workers_mod.MetricPool | None):
        self.counts, self.pool = counts, pool
        self.work = []  # (metric index, states to score, their cache keys)
        for i, metric in enumerate(metrics):
            todo, keys = _from_cache(states, metric, language, counts)
            if todo:
                self.work.append((i, todo, keys))
        self.jobs = [(i, _items(todo, metrics[i], language)) for i, todo, _ in self.work]
        self.metrics = metrics
        self.parts = pool.submit(self.jobs) if self.jobs and pool is not None and pool.usable else None
        if self.parts is None:
            self.outcomes = [compute_scores(metrics[i], items) for i, items in self.jobs]

    @property
    def in_flight(self) -> bool:
        return self.parts is not None

    def finish(self) -> None:
        if not self.jobs:
            return
        outcomes = self.outcomes if self.parts is None else self.pool.collect(self.jobs, self.parts)
        for (i, todo, keys), results in zip(self.work, outcomes, strict=True):
            _store(todo, keys, self.metrics[i], results, self.counts)


def _from_cache(states: list[_State], metric: Metric, language: str, counts: Counts) -> tuple[list[_State], dict]:
    """Apply cached values; return the states still to score and every state's cache key."""
    if metric.needs_reference:
        # Skipped with a recorded reason, not handed to the metric: it never sees a missing reference.
        for s in states:
            if s.reference_for(metric) is None:
                s.values.update(dict.fromkeys(metric.higher_is_better, math.nan))
                s.notes.append(f"{metric.name}: no reference audio")
        states = [s for s in states if s.reference_for(metric) is not None]
    store = cache_mod.JsonCache("scores")
    keys = {id(s): _score_key(s, metric, language) for s in states}
    todo = []
    for s in states:
        hit = store.get(keys[id(s)])
        if hit is None:
            todo.append(s)
            continue
        _accept_score(s, Score({k: (math.nan if v is None else v) for k, v in hit["values"].items()},
                               hit.get("note"), hit.get("texts", {})))
        counts.scores_cached += 1
    return todo, keys


def _items(states: list[_State], metric: Metric, language: str) -> list[ScoringItem]:
    return [ScoringItem(
        utterance=s.utterance,
        language=language,
        audio=s.audio_at(metric.sample_rate),
        transcript=s.transcript,
        reference_text_norm=s.texts.get("text_norm"),
        transcript_norm=s.texts.get("transcript_norm"),
        reference_audio=(s.clip_at(s.reference_for(metric), metric.sample_rate)
                         if metric.needs_reference else None),
    ) for s in states]


def _store(states: list[_State], keys: dict, metric: Metric, outcomes: Sequence[Score | str], counts: Counts) -> None:
    store = cache_mod.JsonCache("scores")
    for s, outcome in zip(states, outcomes, strict=True):
        if isinstance(outcome, str):  # not cached: a crash may be transient
            _accept_score(s, Score(dict.fromkeys(metric.higher_is_better, math.nan), outcome))
            continue
        store.put(keys[id(s)], {"values": {k: (v if math.isfinite(v) else None) for k, v in outcome.values.items()},
                                "note": outcome.note, "texts": dict(outcome.texts)})
        _accept_score(s, outcome)
        counts.scores_computed += 1


def _accept_score(s: _State, score_: Score) -> None:
    s.values.update(score_.values)
    s.texts.update(score_.texts)
    if score_.note:
        s.notes.append(score_.note)


def _score_key(s: _State, metric: Metric, language: str) -> str:
    """Everything a metric's value depends on: its identity, version and options, and its inputs."""
    options = sorted((k, repr(v)) for k, v in vars(metric).items() if not k.startswith("_"))
    texts = (s.texts.get("text_norm", ""), s.texts.get("transcript_norm", "")) if metric.needs_transcript else ("", "")
    return cache_mod.key("score", type(metric).__module__, type(metric).__qualname__, metric.name, metric.version,
                         repr(options), str(metric.sample_rate), language, s.digest("audio"),
                         s.digest(s.reference_for(metric)) if metric.needs_reference else "", *texts)


def aggregate(rows: Sequence[Row], metrics: Sequence[Metric] = ()) -> dict[str, float]:
    """Aggregates over the finite values of every per-utterance key: `key/mean`, `key/median`,
    `key/p90`; for keys a metric declares in `counts`, `key/sum`; for its `corpus` rates,
    `name/corpus` = sum of edits / sum of lengths."""
    counts = {k for m in metrics for k in getattr(m, "counts", ())}
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r.values if k not in keys)
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r.values.get(k, math.nan) for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        if k in counts:
            out[f"{k}/sum"] = float(vals.sum())
            continue
        out[f"{k}/mean"] = float(vals.mean())
        out[f"{k}/median"] = float(np.median(vals))
        out[f"{k}/p90"] = float(np.percentile(vals, 90))
    for metric in metrics:
        for name, (numerators, denominator) in getattr(metric, "corpus", {}).items():
            total = out.get(f"{denominator}/sum", 0.0)
            if total > 0:
                out[f"{name}/corpus"] = sum(out.get(f"{k}/sum", 0.0) for k in numerators) / total
    out["failures/count"] = float(sum(r.failure is not None for r in rows))
    out["utterances/count"] = float(len(rows))
    return out
