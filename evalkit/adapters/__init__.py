"""Adapter resolution: which installed adapter loads MODEL.

With `--adapter NAME|pkg.mod:Name`, that adapter gets MODEL. Otherwise every registered adapter
(entry point group `evalkit.adapters`) is asked `claims(MODEL)` in order of its `priority`
(lower first; adapters without one count as 50), and the first that claims it wins:

    10 torch        a .pt/.pth/.ckpt checkpoint that names its adapter (key `evalkit` or sidecar yaml)
    20 torchscript  a TorchScript archive
    21 torch-export a torch.export archive (.pt2)
    25 hf           hf:NAME[@REVISION], or a folder with a transformers config.json (no wavs)
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


def ordered(unmet_too: bool = False) -> list[tuple[str, plugins.PluginClass, str]]:
    """(name, class, distribution) of every installed adapter, in resolution order; with
    `unmet_too`, also those whose pip extra is not installed."""
    found = plugins.load_all(plugins.ADAPTERS, unmet_too=unmet_too)
    return sorted(found, key=lambda t: (getattr(t[1], "priority", DEFAULT_PRIORITY), t[0]))


def identity(model: str, adapter: str | None = None) -> str | None:
    """What the model's content is, without loading it, from the adapter that would load it, when
    that adapter can tell better than the spec's text (an optional classmethod `identity`: hf:NAME
    names whichever revision the cache holds). None: the caller hashes the file, folder or spec."""
    try:
        if adapter:
            cls = plugins.load(plugins.ADAPTERS, adapter)
        else:
            cls = next((c for n, c, _ in ordered() if c.claims(model)), None)
        tell = getattr(cls, "identity", None)
        return tell(model) if callable(tell) else None
    except EvalkitError:
        return None  # the adapter says what is wrong when it loads the model


def resolve(model: str, adapter: str | None = None, device: str = "cpu") -> TTSAdapter:
    if adapter:
        cls = plugins.load(plugins.ADAPTERS, adapter)
        return cls(model, device)
    tried = []
    missing = plugins.unavailable(plugins.ADAPTERS)
    for name, cls, _dist in ordered(unmet_too=True):
        # An adapter whose extra is missing is still asked (claims() needs no heavy import): the
        # model it would have loaded gets the line naming the extra, not "no adapter loads".
        if cls.claims(model):
            if name in missing:
                raise missing[name]
            return cls(model, device)
        if name not in missing:
            tried.append(name)
    if ":" not in model and not Path(model).exists():
        raise EvalkitError(f"model not found: {model} (no such file, and no adapter claims it; "
                           f"tried {', '.join(tried)})")
    raise EvalkitError(f"no adapter loads {model!r} (tried, in order: {', '.join(tried)}); "
                       "pass --adapter NAME|pkg.mod:Name")
