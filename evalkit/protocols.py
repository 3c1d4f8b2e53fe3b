"""The three plug-in contracts. The core only ever talks to these.

TTS adapters and ASR backends are Protocols (any class of that shape); metrics derive from the
`Metric` base class, which declares every optional attribute with its default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from .errors import EvalkitError
from .types import Audio, Score, ScoringItem, SynthesisRequest, Transcript


@runtime_checkable
class TTSAdapter(Protocol):
    """Turns text into audio. Constructed as `Adapter(model: str, device: str)`.

    `synthesize` is batched: it gets up to `batch_size` requests and returns one Audio per
    request, in order. Raising fails the whole batch; the core then retries the requests one
    by one so that a single bad sentence becomes a single recorded failure.
    """

    name: str
    batch_size: int

    @classmethod
    def claims(cls, model: str) -> bool:
        """Whether MODEL (given without --adapter) is something this adapter loads."""
        ...

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]: ...

    def describe(self) -> Mapping[str, str]:
        """Provenance: at least `model`, `model_sha256`, `sample_rate`, `device`, `adapter_version`."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ASRBackend(Protocol):
    """Transcribes 16 kHz mono float32 audio. Constructed as `Backend(model: str, device: str)`;
    a backend whose constructor also takes `threads` (CPU threads; None: its own default) is
    given the cores the metric worker pool leaves free (evalkit.asr.resolve).

    Construction must be cheap and `describe()` must work before any transcription: the model
    itself is loaded on the first `transcribe`, so a run whose transcripts are all cached never
    needs it. A backend may also offer `load()`, loading it now: a run that synthesizes calls it on
    a thread at start-up (evalkit.asr.preload), so that the first transcript does not wait for it.
    """

    name: str

    def transcribe(self, audio: Sequence[Audio], language: str) -> list[Transcript]: ...

    def describe(self) -> Mapping[str, str]:
        """Provenance: `engine`, `model`, `model_sha256` and every decoding option that changes text."""
        ...


class Metric:
    """Base class of every metric: the declared contract, with a default for every optional part.

    Required, as class attributes: `name` (unique among loaded metrics), `version` (bumped whenever
    the computation changes: part of cache keys and provenance, so values of two versions never
    mix), `sample_rate` (the rate it works at; the core resamples once per rate and records it),
    `higher_is_better` ({value key: True | False | None}: the keys are exactly the values every
    Score carries, the directions how compare and gates read them, None for no direction, as
    duration_ratio whose ideal is 1) and `score(items) -> list[Score]`, one per item, in order.
    It is constructed with keyword arguments only, each with a default (`--metric-option
    NAME.KEY=VALUE` sets those whose default is an int, float, bool or str), and records them in
    `options`.

    Optional, with their defaults here:
    - `needs_transcript`: it reads the ASR transcript (scored in the main process, after ASR).
    - `needs_reference`: it compares with reference audio; an utterance without one gets NaN with
      a note and never reaches `score`.
    - `accepts_speaker_prompt`: a reference-based metric that may compare with the suite's
      speaker prompt when an utterance has no reference of its own.
    - `process_safe`: a picklable instance whose `score` is a pure function of its items, which
      may then run in the metric worker pool (only for metrics that need no transcript).
    - `counts`: value keys the core sums (`key/sum`) instead of taking mean, median and p90.
    - `corpus`: {rate: ((numerator keys...), denominator key)}, all of them `counts`; the core
      reports `rate/corpus` = sum of numerators / sum of the denominator.
    - `options`: the constructor settings, recorded as provenance (`metric.NAME.options`).
    - `alignments`: text columns the metric writes (Score.texts) holding an inline edit alignment,
      `[a→b]` a substitution, `[-x]` a deletion, `[+y]` an insertion; reports render them.
    - `headline`: the value key a report ranks worst utterances by when the user does not choose.
    - `load()`: load now what `score` would load on first use (imports, model weights). A metric
      worker calls it as it starts, so the first clip does not wait for the model (evalkit.workers).
      It must not change any value; the default loads nothing.

    A plug-in that does not derive from this class still loads: `declared` (below) gives it these
    defaults when metrics are loaded.
    """

    name: str
    version: str
    sample_rate: int
    higher_is_better: Mapping[str, bool | None]
    needs_transcript: bool = False
    needs_reference: bool = False
    accepts_speaker_prompt: bool = False
    process_safe: bool = False
    counts: tuple[str, ...] = ()
    corpus: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType({})
    options: Mapping[str, object] = MappingProxyType({})
    alignments: tuple[str, ...] = ()
    headline: str | None = None

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        raise NotImplementedError(f"{type(self).__qualname__} does not define score")

    def implementation(self) -> object:
        """The object whose code and settings compute the values: its class and public instance
        attributes are part of every score cache key (a wrapped plug-in answers with its own)."""
        return self

    def load(self) -> None:
        """Load what `score` needs before the first item arrives; nothing by default."""


# What a metric declares beyond `score`, in the order the wrapper copies them.
_DECLARED = ("name", "version", "sample_rate", "higher_is_better", "needs_transcript", "needs_reference",
             "accepts_speaker_prompt", "process_safe", "counts", "corpus", "options", "alignments", "headline")
_REQUIRED = ("name", "version", "sample_rate", "higher_is_better", "score")


def declared(metric: object) -> Metric:
    """`metric` as a Metric: itself when it derives from the base class, else a wrapper giving a
    plug-in written to the attribute contract alone the defaults of everything it leaves out.
    The one place those defaults are filled in (metrics are loaded through it)."""
    return metric if isinstance(metric, Metric) else _Declared(metric)


class _Declared(Metric):
    """A plug-in metric that does not derive from Metric: its own declarations, the base class's
    defaults for the rest, its own `score`; its cache identity is the plug-in's own."""

    def __init__(self, inner: Any) -> None:
        missing = [a for a in _REQUIRED if not hasattr(inner, a)]
        if missing:
            raise EvalkitError(f"metric {type(inner).__qualname__} does not declare {', '.join(missing)} "
                               "(see evalkit.protocols.Metric)")
        self.inner = inner
        for attr in _DECLARED:  # what it leaves out reads as the class defaults
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))
        self.counts, self.alignments = tuple(self.counts), tuple(self.alignments)
        self.score = inner.score  # type: ignore[method-assign]  # its own, so failures read with its name
        if callable(getattr(inner, "load", None)):
            self.load = inner.load  # type: ignore[method-assign]

    def implementation(self) -> object:
        return self.inner
