"""One evaluation: synthesize -> check -> transcribe once -> score -> aggregate.

The public entry to the evaluation; the work lives in three modules with one purpose each:
- evalkit.stages     what happens to an utterance: synthesize (or replay a recorded run's clip),
                     load references, transcribe, score, with the content-addressed cache keys;
- evalkit.schedule   when and where it happens: chunks, the synthesis thread, the metric
                     worker pool (evalkit.workers) and the threads Whisper gets beside it;
- evalkit.aggregate  whole-run numbers from the finished rows.
Every stage is a function of its inputs (no global state). A failure inside a stage becomes a
recorded failure of that utterance, never a lost run (evalkit.isolation).
"""

from __future__ import annotations

from .aggregate import aggregate
from .progress import Progress
from .schedule import CHUNK, Evaluation, evaluate, metric_pool, pool_workers, whisper_threads
from .stages import SYNTHESIS_KEYS, Counts, Recorded, recorded_audio

__all__ = ["CHUNK", "SYNTHESIS_KEYS", "Counts", "Evaluation", "Progress", "Recorded", "aggregate", "evaluate",
           "metric_pool", "pool_workers", "recorded_audio", "whisper_threads"]
