"""espeak-ng, the formant synthesizer from Debian's `espeak-ng` package: MODEL is `espeak:VOICE`.

Deterministic and fast; robotic, so it exercises the pipeline (Korean included) rather than
standing for a good model.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..audio import duration_cap, read_wav
from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest

PREFIX = "espeak:"
TIMEOUT_S = 60


class EspeakAdapter:
    name = "espeak"
    version = "1"
    batch_size = 1
    priority = 40

    @classmethod
    def claims(cls, model: str) -> bool:
        return model.startswith(PREFIX)

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.voice = model[len(PREFIX):] if model.startswith(PREFIX) else model
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise EvalkitError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self.binary = binary
        probe = subprocess.run([self.binary, "-v", self.voice, "-q", "a"], capture_output=True, text=True)
        if probe.returncode != 0 or "does not exist" in probe.stderr:
            raise EvalkitError(f"espeak-ng has no voice {self.voice!r} (list them with: espeak-ng --voices)")
        self._tmp = tempfile.TemporaryDirectory(prefix="evalkit-espeak-")

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        out = []
        for req in requests:
            wav = Path(self._tmp.name) / "out.wav"
            # Text goes through stdin, never the command line: no quoting or option injection.
            proc = subprocess.run([self.binary, "-v", self.voice, "-w", str(wav), "--stdin"],
                                  input=req.text, capture_output=True, text=True, timeout=TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"espeak-ng exited {proc.returncode}: {proc.stderr.strip()[:200]}")
            out.append(read_wav(wav, duration_cap(req.text)))
        return out

    def describe(self) -> dict[str, str]:
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        h = hashlib.sha256(f"{version}\n{self.voice}".encode())
        return {
            "model": f"{PREFIX}{self.voice}",
            "model_sha256": h.hexdigest(),
            "engine_version": version,
            "sample_rate": "22050",
            "device": "cpu",
            "adapter_version": self.version,
        }

    def close(self) -> None:
        self._tmp.cleanup()
