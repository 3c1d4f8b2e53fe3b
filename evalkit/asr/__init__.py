"""ASR backends: `--asr ENGINE[:MODEL]`, ENGINE a registered `evalkit.asr` entry point name."""

from __future__ import annotations

from functools import lru_cache

from .. import plugins
from ..protocols import ASRBackend

DEFAULT = "faster-whisper:base"


@lru_cache(maxsize=4)
def resolve(spec: str = DEFAULT, device: str = "cpu") -> ASRBackend:
    """The one factory for ASR models: each (spec, device) is loaded once per process."""
    engine, _, model = spec.partition(":")
    cls = plugins.load(plugins.ASR, engine)
    return cls(model or "base", device)
