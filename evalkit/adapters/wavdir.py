"""Audio produced elsewhere: MODEL is a folder of `<utterance_id>.wav` files (or `wavdir:FOLDER`).

Scores a system that cannot run here. Nothing is synthesized; each request gets its file, read
and mixed to mono. The core still times every call, so `rtf` and `synth_seconds` measure file
reading, not a model: ignore them for wavdir runs.

model_sha256 digests every `*.wav` in the folder (names and contents), so re-rendered audio is a
different model even under the same folder name. To score a finished evalkit run again, use
`evalkit rescore RUN_DIR` instead: it keeps the run's model provenance and synthesis timings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..audio import duration_cap, read_wav
from ..cache import sha256_file
from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest
from ..untrusted import inside

PREFIX = "wavdir:"


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.wav") if p.is_file())


class WavDirAdapter:
    name = "wavdir"
    version = "1"
    batch_size = 1
    priority = 90

    @classmethod
    def claims(cls, model: str) -> bool:
        if model.startswith(PREFIX):
            return True  # explicit: __init__ explains what is wrong with the folder
        folder = Path(model)
        return folder.is_dir() and any(p.is_file() for p in folder.glob("*.wav"))

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.folder = Path(model[len(PREFIX):] if model.startswith(PREFIX) else model)
        if not self.folder.is_dir():
            raise EvalkitError(f"wav folder not found: {self.folder}")
        if not _wavs(self.folder):
            raise EvalkitError(f"{self.folder} holds no .wav files (expected one <utterance_id>.wav per utterance)")
        self.model = model
        self._rates: set[int] = set()

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        return [self._one(req) for req in requests]

    def _one(self, req: SynthesisRequest) -> Audio:
        if Path(req.utterance_id).name != req.utterance_id:  # an id with "/" must not read outside the folder
            raise ValueError(f"utterance id {req.utterance_id!r} cannot name a file in {self.folder}")
        try:  # nor may a symlink in it
            path = inside(self.folder, f"{req.utterance_id}.wav", "audio file")
        except EvalkitError as exc:
            raise ValueError(str(exc)) from None
        if not path.is_file():
            raise FileNotFoundError(f"no audio for {req.utterance_id!r}: expected {path}")
        try:
            audio = read_wav(path, duration_cap(req.text))
        except EvalkitError as exc:
            raise RuntimeError(str(exc)) from None
        self._rates.add(audio.sample_rate)
        return audio

    def describe(self) -> dict[str, str]:
        h = hashlib.sha256()
        files = _wavs(self.folder)
        for path in files:
            h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
        return {
            "model": self.model,
            "model_path": str(self.folder.resolve()),
            "model_sha256": h.hexdigest(),
            "files": str(len(files)),
            "sample_rate": str(next(iter(self._rates))) if len(self._rates) == 1 else "variable",
            "device": "cpu",
            "adapter_version": self.version,
        }

    def close(self) -> None:
        pass
