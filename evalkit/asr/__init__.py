"""ASR backends: `--asr ENGINE[:MODEL]`, ENGINE a registered `evalkit.asr` entry point name."""

from __future__ import annotations

import hashlib
import inspect
import json
from functools import lru_cache

from .. import plugins
from ..protocols import ASRBackend

DEFAULT = "faster-whisper:base"


def resolve(spec: str = DEFAULT, device: str = "cpu", threads: int | None = None) -> ASRBackend:
    """The one factory for ASR models: each (spec, device, threads) is loaded once per process.

    `threads` is the number of CPU threads the backend may use (None: its own default); it is
    decided before construction (evalkit.pipeline.whisper_threads) and given to backends whose
    constructor takes a `threads` argument. It never changes a transcript, so it is not part
    of `describe()`."""
    engine, _, model = spec.partition(":")
    if "threads" not in inspect.signature(plugins.load(plugins.ASR, engine)).parameters:
        threads = None  # one instance whatever was asked: this backend keeps its own default
    return _construct(engine, model or "base", device, threads)


@lru_cache(maxsize=4)
def _construct(engine: str, model: str, device: str, threads: int | None) -> ASRBackend:
    cls = plugins.load(plugins.ASR, engine)
    return cls(model, device) if threads is None else cls(model, device, threads=threads)


def description(engine: str, model: str, model_sha256: str, device: str, options: dict,
                weights_sha256: str | None = None, **extra: str) -> dict[str, str]:
    """A backend's describe(): provenance plus `settings_digest`, the one string that says
    whether two runs' transcripts are comparable (engine, the exact weights, decoding options).
    `weights_sha256` names the file actually loaded when it differs from the model digest."""
    options_json = json.dumps(options, sort_keys=True)
    digest = hashlib.sha256(f"{engine}|{weights_sha256 or model_sha256}|{options_json}".encode()).hexdigest()[:16]
    return {"engine": engine, "model": model, "model_sha256": model_sha256, **extra, "device": device,
            "options": options_json, "settings_digest": digest}
