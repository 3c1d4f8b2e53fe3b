"""One evaluation: synthesize -> check -> transcribe once -> score -> aggregate.

Every stage is a function of its inputs (no global state), so later executors can run them
in parallel or on other machines. A failure inside a stage becomes a recorded failure of that
utterance, never a lost run: batches that raise are retried one utterance at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

from . import audio as audio_mod
from . import cache as cache_mod
from . import textnorm
from .protocols import ASRBackend, Metric, TTSAdapter
from .types import Audio, Row, Score, ScoringItem, Suite, SynthesisRequest, Transcript, Utterance

ASR_SAMPLE_RATE = 16000
ASR_BATCH = 8
METRIC_BATCH = 16


class Progress:
    """What the pipeline reports to a UI; the default reports nothing."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


@dataclass
class _State:
    """Mutable per-utterance working state; frozen into a Row at the end."""

    utterance: Utterance
    audio: Audio | None = None
    audio_path: str | None = None
    transcript: Transcript | None = None
    values: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    reference: Audio | None = None
    _resampled: dict[tuple[str, int], Audio] = field(default_factory=dict)

    def audio_at(self, sample_rate: int) -> Audio:
        """The clip at `sample_rate`, resampled at most once per rate."""
        return self._at("audio", self.audio, sample_rate)

    def reference_at(self, sample_rate: int) -> Audio | None:
        return None if self.reference is None else self._at("reference", self.reference, sample_rate)

    def _at(self, which: str, audio: Audio, sample_rate: int) -> Audio:
        if (which, sample_rate) not in self._resampled:
            self._resampled[(which, sample_rate)] = audio_mod.resample(audio, sample_rate)
        return self._resampled[(which, sample_rate)]


@dataclass(frozen=True)
class Evaluation:
    rows: list[Row]
    transcripts_cached: int  # transcripts taken from the cache instead of the ASR model
    transcripts_computed: int


def evaluate(suite: Suite, adapter: TTSAdapter, asr: ASRBackend | None, metrics: Sequence[Metric],
             out_dir: Path, progress: Progress | None = None,
             references: Mapping[str, Path] | None = None) -> Evaluation:
    progress = progress or Progress()
    states = [_State(u) for u in suite.utterances]
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)

    synthesize(states, adapter, suite.language, audio_dir, progress)
    alive = [s for s in states if s.failure is None]
    if references and any(m.needs_reference for m in metrics):
        load_references(alive, references)
    cached = 0
    if asr is not None and any(m.needs_transcript for m in metrics):
        cached = transcribe(alive, asr, suite.language, progress)
    for metric in metrics:
        score(alive, metric, suite.language, progress)
    rows = [Row(s.utterance.id, s.utterance.text, s.utterance.tags, s.values, s.texts,
                s.audio_path, s.failure, tuple(s.notes)) for s in states]
    return Evaluation(rows, cached, sum(s.transcript is not None for s in alive) - cached)


def synthesize(states: list[_State], adapter: TTSAdapter, language: str, audio_dir: Path,
               progress: Progress) -> None:
    progress.start("synthesize", len(states))
    size = max(1, int(getattr(adapter, "batch_size", 1)))

    def timed(reqs: list[SynthesisRequest]) -> list[tuple[Audio, float]]:
        t0 = time.perf_counter()
        clips = _one_each(adapter.synthesize)(reqs)
        seconds = time.perf_counter() - t0
        # A batch's time is shared out by duration: every clip of a batch gets the batch's RTF.
        total = sum(c.duration for c in clips)
        return [(c, seconds * c.duration / total if total > 0 else seconds / len(clips)) for c in clips]

    for batch in _chunks(states, size):
        requests = [SynthesisRequest(s.utterance.id, s.utterance.text, language, s.utterance.speaker) for s in batch]
        for s, outcome in zip(batch, _isolated(timed, requests)):
            if isinstance(outcome, BaseException):
                s.failure = f"synthesis failed: {_one_line(outcome)}"
            else:
                _accept_audio(s, *outcome, audio_dir)
        progress.advance(len(batch))


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


def transcribe(states: list[_State], asr: ASRBackend, language: str, progress: Progress) -> int:
    """Transcribe each clip once per (audio, ASR settings, language), ever: results are cached by
    content. Returns how many came from the cache."""
    progress.start("transcribe", len(states))
    store = cache_mod.JsonCache("transcripts")
    settings = asr.describe().get("settings_digest") or repr(sorted(asr.describe().items()))
    keys = {id(s): cache_mod.key(cache_mod.audio_digest(s.audio_at(ASR_SAMPLE_RATE)), settings, language)
            for s in states}
    todo, cached = [], 0
    for s in states:
        hit = store.get(keys[id(s)])
        if hit is not None:
            _accept_transcript(s, Transcript(hit["text"], language), language)
            cached += 1
            progress.advance()
        else:
            todo.append(s)
    for batch in _chunks(todo, ASR_BATCH):
        clips = [s.audio_at(ASR_SAMPLE_RATE) for s in batch]
        for s, outcome in zip(batch, _isolated(_one_each(lambda a: asr.transcribe(a, language)), clips)):
            if isinstance(outcome, BaseException):
                s.notes.append(f"asr failed: {_one_line(outcome)}")
                continue
            store.put(keys[id(s)], {"text": outcome.text})
            _accept_transcript(s, outcome, language)
        progress.advance(len(batch))
    return cached


def _accept_transcript(s: _State, transcript: Transcript, language: str) -> None:
    s.transcript = transcript
    s.texts["transcript"] = transcript.text
    s.texts["text_norm"] = textnorm.normalize(s.utterance.text, language)
    s.texts["transcript_norm"] = textnorm.normalize(transcript.text, language)


def load_references(states: list[_State], references: Mapping[str, Path]) -> None:
    for s in states:
        path = references.get(s.utterance.id)
        if path is None:
            continue
        try:
            ref = audio_mod.read_wav(path)
        except Exception as exc:  # one unreadable reference costs one utterance its reference metrics
            s.notes.append(f"reference unreadable: {_one_line(exc)}")
            continue
        failure, _ = audio_mod.check(ref)
        if failure:
            s.notes.append(f"reference unusable: {failure}")
        else:
            s.reference = ref


def score(states: list[_State], metric: Metric, language: str, progress: Progress) -> None:
    progress.start(metric.name, len(states))
    if metric.needs_reference:
        # Skipped with a recorded reason, not handed to the metric: it never sees a missing reference.
        for s in states:
            if s.reference is None:
                s.values.update(dict.fromkeys(metric.higher_is_better, math.nan))
                s.notes.append(f"{metric.name}: no reference audio")
        progress.advance(sum(s.reference is None for s in states))
        states = [s for s in states if s.reference is not None]
    for batch in _chunks(states, METRIC_BATCH):
        items = [ScoringItem(
            utterance=s.utterance,
            language=language,
            audio=s.audio_at(metric.sample_rate),
            transcript=s.transcript,
            reference_text_norm=s.texts.get("text_norm"),
            transcript_norm=s.texts.get("transcript_norm"),
            reference_audio=s.reference_at(metric.sample_rate),
        ) for s in batch]
        for s, outcome in zip(batch, _isolated(_one_each(metric.score), items)):
            if isinstance(outcome, BaseException):
                outcome = Score(dict.fromkeys(metric.higher_is_better, math.nan),
                                f"{metric.name} failed: {_one_line(outcome)}")
            s.values.update(outcome.values)
            s.texts.update(outcome.texts)
            if outcome.note:
                s.notes.append(outcome.note)
        progress.advance(len(batch))


T = TypeVar("T")
R = TypeVar("R")


def _one_each(fn: Callable[[list[T]], Sequence[R]]) -> Callable[[list[T]], Sequence[R]]:
    """A plug-in's batch call, refusing an answer that does not pair one result with each input."""
    def call(items: list[T]) -> Sequence[R]:
        result = fn(items)
        if len(result) != len(items):
            raise RuntimeError(f"{getattr(fn, '__qualname__', fn)} returned {len(result)} results for {len(items)} inputs")
        return result
    return call


def _isolated(fn: Callable[[list[T]], Sequence[R]], items: list[T]) -> list[R | Exception]:
    """fn over the whole batch; if that raises, fn once per item, so one bad item fails alone."""
    try:
        return list(fn(items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    out: list[R | Exception] = []
    for item in items:
        try:
            out.extend(fn([item]))
        except Exception as exc:  # recorded per utterance, on purpose
            out.append(exc)
    return out


def _chunks(seq: Sequence[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(seq), size):
        yield list(seq[i:i + size])


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


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
