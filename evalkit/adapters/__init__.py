"""Adapter resolution: which installed adapter loads MODEL.

Order: `--adapter NAME|pkg.mod:Name` if given; otherwise every registered adapter (entry point
group `evalkit.adapters`) is asked `claims(MODEL)` and the first that claims it wins. Built-in
claims: `espeak:VOICE` (espeak), `piper:NAME` or `*.onnx` (piper).
"""

from __future__ import annotations

from pathlib import Path

from .. import plugins
from ..errors import EvalkitError
from ..protocols import TTSAdapter


def resolve(model: str, adapter: str | None = None, device: str = "cpu") -> TTSAdapter:
    if adapter:
        cls = plugins.load(plugins.ADAPTERS, adapter)
        return cls(model, device)
    tried = []
    for name, (target, _dist) in plugins.registered(plugins.ADAPTERS).items():
        cls = plugins.load_target(target)
        if cls.claims(model):
            return cls(model, device)
        tried.append(name)
    if ":" not in model and not Path(model).exists():
        raise EvalkitError(f"model not found: {model} (no such file, and no adapter claims it; tried {', '.join(tried)})")
    raise EvalkitError(f"no adapter loads {model!r} (tried {', '.join(tried)}); pass --adapter NAME|pkg.mod:Name")
