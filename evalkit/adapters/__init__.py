"""Adapter resolution: which installed adapter loads MODEL.

With `--adapter NAME|pkg.mod:Name`, that adapter gets MODEL. Otherwise every registered adapter
(entry point group `evalkit.adapters`) is asked `claims(MODEL)` in order of its `priority`
(lower first; adapters without one count as 50), and the first that claims it wins:

    10 torch        a .pt/.pth/.ckpt checkpoint that names its adapter (key `evalkit` or sidecar yaml)
    20 torchscript  a TorchScript archive
    30 piper        piper:NAME or a Piper .onnx voice
    40 espeak       espeak:VOICE
    41 cmd          cmd:TEMPLATE
    42 http         http(s)://... (OpenAI-compatible /v1/audio/speech)
    90 wavdir       a folder of <utterance id>.wav
"""

from __future__ import annotations

from pathlib import Path

from .. import plugins
from ..errors import EvalkitError
from ..protocols import TTSAdapter

DEFAULT_PRIORITY = 50


def ordered() -> list[tuple[str, type, str]]:
    """(name, class, distribution) of every installed adapter, in resolution order."""
    found = plugins.load_all(plugins.ADAPTERS)
    return sorted(found, key=lambda t: (getattr(t[1], "priority", DEFAULT_PRIORITY), t[0]))


def resolve(model: str, adapter: str | None = None, device: str = "cpu") -> TTSAdapter:
    if adapter:
        cls = plugins.load(plugins.ADAPTERS, adapter)
        return cls(model, device)
    tried = []
    for name, cls, _dist in ordered():
        if cls.claims(model):
            return cls(model, device)
        tried.append(name)
    if ":" not in model and not Path(model).exists():
        raise EvalkitError(f"model not found: {model} (no such file, and no adapter claims it; tried {', '.join(tried)})")
    raise EvalkitError(f"no adapter loads {model!r} (tried, in order: {', '.join(tried)}); "
                       "pass --adapter NAME|pkg.mod:Name")
