"""tiny-tts (tests only): a real, tiny PyTorch text-to-waveform model loaded from a checkpoint.

Not intelligible, but deterministic for a given seed, longer for longer text, and scriptable
with torch.jit.script (see model.py). Config (the checkpoint's `evalkit.config`): `model`
(TinyTTSModel keyword arguments), `fail_on` (raise on exactly this text), `never_stop_s` (emit
this many seconds for any text, like a model that never predicts its end).

Also `degraded-piper` (DegradedPiper, save_degraded): the bundled Piper voice with noise at a
strength stored in each checkpoint, a checkpoint family whose quality falls predictably with the
strength, for the sweep tests and benchmarks/sweep.py.
"""

import math
import warnings
from dataclasses import dataclass

from evalkit.adapters.torch_checkpoint import TorchTTS

__version__ = "0.1.0"


@dataclass
class TrainerState:
    """Stands for the non-tensor objects real training scripts pickle into checkpoints."""

    step: int = 0


class TinyTTS(TorchTTS):
    fail_on: str | None = None
    never_stop_s: float = 0.0

    @classmethod
    def from_checkpoint(cls, state, config, device):
        from .model import TinyTTSModel

        net = TinyTTSModel(**config.get("model", {}))
        net.load_state_dict(state["model"])
        adapter = cls(net, device, sample_rate=net.sample_rate)
        adapter.fail_on = config.get("fail_on")
        adapter.never_stop_s = float(config.get("never_stop_s", 0.0))
        return adapter

    def synthesize_one(self, text, speaker, seed):
        if text == self.fail_on:
            raise RuntimeError(f"tiny-tts was configured to fail on {text!r}")
        wave = self.model(text)
        if self.never_stop_s:
            wave = wave.repeat(math.ceil(self.never_stop_s * self.sample_rate / max(1, len(wave))))
        return wave


def build_model(seed: int = 0, **kwargs):
    """The same weights for the same seed: what a training run would have saved."""
    import torch

    from .model import TinyTTSModel

    torch.manual_seed(seed)
    return TinyTTSModel(**kwargs).eval()


def save_checkpoint(path, evalkit: dict | None = None, **extra) -> None:
    """A training-style checkpoint; `evalkit` (if given) names the adapter, as users are told to."""
    import torch

    state = {"model": build_model().state_dict(), "step": 1000, **extra}
    if evalkit is not None:
        state["evalkit"] = evalkit
    torch.save(state, path)


def save_torchscript(path, sample_rate_as: str = "attribute") -> None:
    """A TorchScript archive whose sample rate is a module attribute (`attribute`), only the
    archive's extra file `sample_rate` (`extra`), or nowhere (`none`)."""
    import torch

    from .model import WithoutRate

    model = build_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still widely shipped
        scripted = torch.jit.script(model if sample_rate_as == "attribute" else WithoutRate(model))
        extra = {"sample_rate": str(model.sample_rate)} if sample_rate_as == "extra" else {}
        torch.jit.save(scripted, str(path), _extra_files=extra)


class DegradedPiper(TorchTTS):
    """The bundled Piper voice (piper:joe) with white noise at the checkpoint's `degradation`
    (noise standard deviation, in full scale) added: a family of checkpoints whose quality gets
    predictably worse with the strength stored in each, standing for a training run going wrong.
    The noise is seeded per utterance, so a checkpoint's clips are reproducible."""

    @classmethod
    def from_checkpoint(cls, state, config, device):
        from evalkit import adapters

        adapter = cls(None, device)
        adapter.voice = adapters.resolve("piper:joe", None, "cpu")
        adapter.strength = float(state.get("degradation", config.get("degradation", 0.0)))
        return adapter

    def synthesize(self, requests):
        import numpy as np

        from evalkit.types import Audio

        out = []
        for req, clip in zip(requests, self.voice.synthesize(requests), strict=True):
            noise = np.random.default_rng(req.seed).standard_normal(len(clip.samples)).astype(np.float32)
            mixed = np.clip(clip.samples + self.strength * noise, -1.0, 1.0)
            out.append(Audio(mixed.astype(np.float32), clip.sample_rate))
        self.sample_rate = out[-1].sample_rate if out else self.sample_rate
        return out

    def close(self):
        self.voice.close()


def save_degraded(path, degradation: float, step: int | None = None, step_key: str = "global_step") -> None:
    """A checkpoint of the degrading family: `degradation` is its noise strength."""
    import torch

    state = {"degradation": float(degradation), "evalkit": {"adapter": "degraded-piper"}}
    if step is not None:
        state[step_key] = step
    torch.save(state, path)
