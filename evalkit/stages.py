"""The stages of one evaluation, each a function of its inputs over a chunk's working states:
synthesize (or replay a recorded run's clips) -> load references -> transcribe once -> score.

A failure inside a stage becomes a recorded failure or note of that utterance, never a lost
run: batches that raise are retried one utterance at a time (evalkit.isolation). Transcripts
and metric values are cached by content (the keys are built here, from everything a result
depends on), so re-scoring recomputes only what changed. When and where each stage runs is
evalkit.schedule's business.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import audio as audio_mod
from . import cache as cache_mod
from . import record, textnorm, trace
from .errors import EvalkitError
from .isolation import chunks, compute_scores, isolated, one_each, one_line
from .protocols import ASRBackend, Metric, TTSAdapter
from .types import Audio, Row, Score, ScoringItem, SynthesisRequest, Transcript, Utterance

ASR_SAMPLE_RATE = 16000
ASR_BATCH = 8

# What the synthesis stage records per utterance: carried over unchanged when a run is re-scored.
SYNTHESIS_KEYS = ("duration_s", "peak", "clip_ratio", "lead_silence_s", "trail_silence_s", "synth_seconds", "rtf")
# The text columns the transcription stage writes.
TRANSCRIPT_TEXTS = ("transcript", "text_norm", "transcript_norm")

Clip = str  # which clip of an utterance: "audio" (the output), "reference" or "prompt"


@dataclass
class State:
    """One utterance's mutable working state through the stages; frozen into a Row when its
    chunk is done, then `release`d."""

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
    _resampled: dict[tuple[Clip, int], Audio] = field(default_factory=dict)
    _digests: dict[Clip, str] = field(default_factory=dict)

    def clip(self, which: Clip) -> Audio | None:
        return {"audio": self.audio, "reference": self.reference, "prompt": self.prompt}[which]

    def audio_at(self, sample_rate: int) -> Audio:
        """The clip at `sample_rate`, resampled at most once per rate."""
        return self.clip_at("audio", sample_rate)

    def clip_at(self, which: Clip, sample_rate: int) -> Audio:
        if (which, sample_rate) not in self._resampled:
            clip = self.clip(which)
            if clip is None:
                raise ValueError(f"{self.utterance.id} has no {which} clip (released, or never loaded)")
            with trace.span(f"resample to {sample_rate} Hz", "resample", utterance=self.utterance.id, clip=which):
                self._resampled[(which, sample_rate)] = audio_mod.resample(clip, sample_rate)
        return self._resampled[(which, sample_rate)]

    def reference_for(self, metric: Metric) -> Clip | None:
        """Which clip `metric` compares against: the reference, else (if it accepts one) the
        speaker prompt."""
        if self.reference is not None:
            return "reference"
        if self.prompt is not None and metric.accepts_speaker_prompt:
            return "prompt"
        return None

    def digest(self, which: Clip) -> str:
        """Content hash of the clip, its reference or its prompt (native rate), computed once."""
        if which not in self._digests:
            clip = self.clip(which)
            self._digests[which] = cache_mod.audio_digest(clip) if clip is not None else ""
        return self._digests[which]

    def row(self) -> Row:
        return Row(self.utterance.id, self.utterance.text, self.utterance.tags, dict(self.values),
                   dict(self.texts), self.audio_path, self.failure, tuple(self.notes))

    def release(self) -> None:
        """Drop every clip and resampled copy (the output is on disk): memory stays flat over
        long suites. What the row holds, and the digests, stay."""
        self.audio = self.reference = self.prompt = None
        self._resampled.clear()


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
    rows: Mapping[str, Row]  # utterance id -> its row in the run's utterances.jsonl


# --- synthesis ------------------------------------------------------------------------------


def synthesize(states: list[State], adapter: TTSAdapter, language: str, audio_dir: Path,
               done: Callable[[int], None] | None = None, seed: int = 0) -> None:
    """Synthesize, check and save each clip; `done(n)` after each batch of n (progress). Every
    request carries `seed` (RunConfig.seed): a stochastic model seeds its sampling with it."""
    size = max(1, int(getattr(adapter, "batch_size", 1)))

    def timed(reqs: list[SynthesisRequest]) -> list[tuple[Audio, float]]:
        t0 = time.perf_counter()
        clips = one_each(adapter.synthesize)(reqs)
        seconds = time.perf_counter() - t0
        # A batch's time is shared out by duration: every clip of a batch gets the batch's RTF.
        total = sum(c.duration for c in clips)
        return [(c, seconds * c.duration / total if total > 0 else seconds / len(clips)) for c in clips]

    for batch in chunks(states, size):
        requests = [SynthesisRequest(s.utterance.id, s.utterance.text, language, s.utterance.speaker, seed)
                    for s in batch]
        with trace.span("synthesize", "synthesis", utterances=",".join(r.utterance_id for r in requests)):
            outcomes = isolated(timed, requests)
        with trace.span("check and write clips", "write", n=len(batch)):
            for s, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    s.failure = f"synthesis failed: {one_line(outcome)}"
                else:
                    _accept_audio(s, *outcome, audio_dir)
        if done is not None:
            done(len(batch))


def replay(states: list[State], recorded: Recorded, audio_dir: Path,
           done: Callable[[int], None] | None = None) -> None:
    """The synthesis stage of a re-score: each clip, its synthesis facts and any synthesis failure
    exactly as the recorded run saved them (the saved wav is the very samples it scored)."""
    for s in states:
        row = recorded.rows.get(s.utterance.id)
        if row is None:
            s.failure = "not in the recorded run"
            continue
        s.values.update({k: row.values[k] for k in SYNTHESIS_KEYS if k in row.values})
        if row.failure:
            s.failure = row.failure
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
    if done is not None:
        done(len(states))


def recorded_audio(folder: Path, row: Row) -> Path:
    """A recorded row's clip, inside the run's own audio/ (checked for every row before a re-score starts)."""
    path = record.audio_file(folder, row)
    if path is None:
        raise EvalkitError(f"{folder}: utterance {row.utterance_id!r} has no failure and no audio")
    return path


def _accept_audio(s: State, clip: Audio, seconds: float, audio_dir: Path) -> None:
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


# --- references -----------------------------------------------------------------------------


def load_references(states: list[State], references: Mapping[str, Path]) -> None:
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
            elif which == "reference":
                s.reference = clip
            else:
                s.prompt = clip


# --- transcription --------------------------------------------------------------------------


def transcribe(states: list[State], asr: ASRBackend, language: str, counts: Counts) -> None:
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
        with trace.span("ASR", "asr", engine=getattr(asr, "name", "?"), n=len(clips)):
            outcomes = isolated(one_each(lambda a: asr.transcribe(a, language)), clips)
        for s, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                s.notes.append(f"asr failed: {one_line(outcome)}")
                continue
            store.put(keys[id(s)], {"text": outcome.text})
            _accept_transcript(s, outcome, language)
            counts.transcripts_computed += 1


def _accept_transcript(s: State, transcript: Transcript, language: str) -> None:
    s.transcript = transcript
    s.texts["transcript"] = transcript.text  # the three TRANSCRIPT_TEXTS
    s.texts["text_norm"] = textnorm.normalize(s.utterance.text, language)
    s.texts["transcript_norm"] = textnorm.normalize(transcript.text, language)


# --- scoring --------------------------------------------------------------------------------
# Scoring a metric is three steps, so that the middle one may run elsewhere (the worker pool):
# `from_cache` applies cached values and says what is left, `items` builds the metric's inputs
# for it, `store` applies and caches what was computed. `score` is the three in this process.


@dataclass
class ScoringWork:
    """One metric's cache misses in a chunk: the states left to score and every state's key."""

    metric: Metric
    states: list[State]
    keys: dict[int, str]


def score(states: list[State], metric: Metric, language: str, counts: Counts) -> None:
    """Score `states` with `metric` in this process (cache first)."""
    work = from_cache(states, metric, language, counts)
    store(work, compute_scores(metric, items(work, language)), counts)


def from_cache(states: list[State], metric: Metric, language: str, counts: Counts) -> ScoringWork:
    """Apply cached values; return the states still to score, with every state's cache key."""
    if metric.needs_reference:
        # Skipped with a recorded reason, not handed to the metric: it never sees a missing reference.
        for s in states:
            if s.reference_for(metric) is None:
                s.values.update(dict.fromkeys(metric.higher_is_better, math.nan))
                s.notes.append(f"{metric.name}: no reference audio")
        states = [s for s in states if s.reference_for(metric) is not None]
    cache = cache_mod.JsonCache("scores")
    keys = {id(s): score_key(s, metric, language) for s in states}
    todo = []
    for s in states:
        hit = cache.get(keys[id(s)])
        if hit is None:
            todo.append(s)
            continue
        _accept_score(s, Score({k: (math.nan if v is None else v) for k, v in hit["values"].items()},
                               hit.get("note"), hit.get("texts", {})))
        counts.scores_cached += 1
    return ScoringWork(metric, todo, keys)


def items(work: ScoringWork, language: str) -> list[ScoringItem]:
    """The metric's inputs for the states left to score, at its sample rate."""
    metric = work.metric

    def reference(s: State) -> Audio | None:  # only states with a reference are left to score
        which = s.reference_for(metric)
        return s.clip_at(which, metric.sample_rate) if metric.needs_reference and which is not None else None

    return [ScoringItem(
        utterance=s.utterance,
        language=language,
        audio=s.audio_at(metric.sample_rate),
        transcript=s.transcript,
        reference_text_norm=s.texts.get("text_norm"),
        transcript_norm=s.texts.get("transcript_norm"),
        reference_audio=reference(s),
    ) for s in work.states]


def store(work: ScoringWork, outcomes: Sequence[Score | str], counts: Counts) -> None:
    """Apply each outcome to its state; cache the Scores (a failure, a string, is not cached:
    a crash may be transient)."""
    cache = cache_mod.JsonCache("scores")
    for s, outcome in zip(work.states, outcomes, strict=True):
        if isinstance(outcome, str):
            _accept_score(s, Score(dict.fromkeys(work.metric.higher_is_better, math.nan), outcome))
            continue
        values = {k: (v if math.isfinite(v) else None) for k, v in outcome.values.items()}
        cache.put(work.keys[id(s)], {"values": values, "note": outcome.note, "texts": dict(outcome.texts)})
        _accept_score(s, outcome)
        counts.scores_computed += 1


def _accept_score(s: State, score_: Score) -> None:
    s.values.update(score_.values)
    s.texts.update(score_.texts)
    if score_.note:
        s.notes.append(score_.note)


def score_key(s: State, metric: Metric, language: str) -> str:
    """Everything a metric's value depends on: its identity, version and options (every public
    attribute of the instance that computes it), and its inputs."""
    impl = metric.implementation()
    reference = s.reference_for(metric) if metric.needs_reference else None
    options = sorted((k, repr(v)) for k, v in vars(impl).items() if not k.startswith("_"))
    # The raw texts too, not only their normal forms: "3개" and "세 개" normalize alike, but only
    # the digits leave the reading unverified; and the suite's listed readings are accepted answers.
    texts = ((s.texts.get("text_norm", ""), s.texts.get("transcript_norm", ""), s.utterance.text,
              s.transcript.text if s.transcript is not None else "", "\x1f".join(s.utterance.readings))
             if metric.needs_transcript else ("", ""))
    return cache_mod.key("score", type(impl).__module__, type(impl).__qualname__, metric.name, metric.version,
                         repr(options), str(metric.sample_rate), language, s.digest("audio"),
                         s.digest(reference) if reference is not None else "", *texts)
