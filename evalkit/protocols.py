"""The three plug-in contracts. The core only ever talks to these."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

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
    """Transcribes 16 kHz mono float32 audio. Constructed as `Backend(model: str, device: str)`.

    Construction must be cheap and `describe()` must work before any transcription: the model
    itself is loaded on the first `transcribe`, so a run whose transcripts are all cached never
    loads it.
    """

    name: str

    def transcribe(self, audio: Sequence[Audio], language: str) -> list[Transcript]: ...

    def describe(self) -> Mapping[str, str]:
        """Provenance: `engine`, `model`, `model_sha256` and every decoding option that changes text."""
        ...


@runtime_checkable
class Metric(Protocol):
    """Scores utterances. Constructed with no arguments.

    `sample_rate` is the rate the metric works at (the core resamples once per rate); `keys`
    lists the values each Score carries, `higher_is_better` says their direction, `version` is
    bumped whenever the computation changes, so results with different versions never mix.

    Optional: `options` (a dict of the constructor settings, recorded as provenance),
    `accepts_speaker_prompt` (a reference-based metric that may compare with the suite's
    speaker prompt when an utterance has no reference of its own), `counts`
    (keys the core sums instead of taking mean/median/p90) and `corpus`
    ({rate: ((numerator keys...), denominator key)}: the core reports `rate/corpus`),
    `process_safe` (True: a picklable instance whose `score` is a pure function of its items,
    which may then run in the metric worker pool; only for metrics that need no transcript).
    """

    name: str
    version: str
    sample_rate: int
    needs_transcript: bool
    needs_reference: bool
    higher_is_better: Mapping[str, bool | None]  # None: no direction (duration_ratio: 1 is ideal)

    def score(self, items: Sequence[ScoringItem]) -> list[Score]: ...
