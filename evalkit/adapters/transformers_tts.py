"""Hugging Face transformers text-to-speech models (the `hf` extra): VITS, which covers the MMS-TTS
voices (facebook/mms-tts-kor, facebook/mms-tts-eng, ... one per language) and any model trained or
fine-tuned with transformers' VitsModel.

MODEL is one of

    hf:NAME               a model on the Hugging Face hub (hf:facebook/mms-tts-kor), its main revision
    hf:NAME@REVISION      the same at a branch, tag or commit
    FOLDER                what save_pretrained wrote: config.json (model_type vits), the weights
                          (model.safetensors or pytorch_model.bin) and the tokenizer (vocab.json,
                          tokenizer_config.json)

A hub model is read from the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
~/.cache/huggingface/hub) without network. One that is not there is downloaded only when the user
allows it, by the same rule as Whisper models (EVALKIT_ALLOW_DOWNLOAD=1, or `evalkit run
--allow-download`); otherwise the run stops at once (exit 2) with the command that fetches it.
Every file loaded is hashed, and a cached file whose sha256 is not its blob's name (an interrupted
download) is one line naming it.

Synthesis is one utterance per call, with torch.manual_seed(seed) before each: VITS samples its
durations and its latent noise, and a batch draws the noise for all its utterances at once, so a
batched clip would depend on its neighbours. The model's own noise_scale, noise_scale_duration and
speaking_rate (config.json) are used and recorded.

Text goes through the model's own tokenizer steps (lower-casing, uroman romanization for models
trained on romanized text such as mms-tts-kor, phonemization where the tokenizer asks for it). The
tokenizer silently drops characters outside its vocabulary; here an utterance that would lose more
than half its letters fails with a recorded reason naming them (a Korean suite on an English
vocabulary is not a run of noise), and the letters dropped from the utterances that were spoken
are counted in provenance (`text_letters_dropped`, `text_chars_dropped`).

A multi-speaker model (config num_speakers > 1) speaks the suite's `speaker` as a speaker id
(0..N-1), and speaker 0 where the suite names none; a single-speaker model refuses an utterance
that names a speaker.

Other transformers TTS models are refused with one line. SpeechT5 needs three things the model
name alone does not give: a separate vocoder repository (microsoft/speecht5_hifigan), a 512-value
speaker x-vector per voice (published only inside a dataset) and the sentencepiece package; its
released tokenizer is English only.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import EvalkitError, MissingExtra, whole
from ..types import Audio, SynthesisRequest
from .torch_checkpoint import _device, as_audio

PREFIX = "hf:"
SUPPORTED = {"vits": "VITS / MMS-TTS"}
NOT_SUPPORTED = {
    "speecht5": "SpeechT5 needs a vocoder repository and a speaker x-vector that the model does not name",
}
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.json")
SAFETENSORS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")
# What a hub download fetches: the safetensors weights first, the pickled ones only for a
# repository that has no safetensors (transformers reads them with weights_only=True).
HUB_FILES = (*CONFIG_FILES, *TOKENIZER_FILES, *SAFETENSORS)
MAX_CONFIG_BYTES = 10 * 2**20
# More than this share of an utterance's letters missing from the vocabulary: it fails.
MAX_LOST = 0.5
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_NON_ROMAN = re.compile(r"[^\x00-\x7F]")  # transformers' own test for when uroman applies


class UnreadableText(ValueError):
    """An utterance the model's tokenizer cannot spell: recorded as that utterance's failure."""


def read_config(folder: Path) -> dict | None:
    """The folder's transformers config.json (a JSON object with `model_type`), or None."""
    path = folder / "config.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("model_type"), str) else None


def parse_spec(model: str) -> tuple[str, str | None]:
    """(repo, revision or None) of `hf:NAME[@REVISION]`."""
    name, _, revision = model[len(PREFIX):].partition("@")
    if not _REPO.fullmatch(name) or (revision and not re.fullmatch(r"[\w./-]+", revision)):
        raise EvalkitError(f"{model!r}: expected hf:NAME or hf:NAME@REVISION (e.g. hf:facebook/mms-tts-kor)")
    return name, revision or None


def weight_files(folder: Path) -> list[Path]:
    """The weights transformers loads from `folder`: safetensors if any, else the pickled ones."""
    for patterns in (SAFETENSORS, PICKLED):
        found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
        if any(p.suffix != ".json" for p in found):
            return found
    return []


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' loading progress bars and advice off: a run's stderr is evalkit's lines."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _flags(tokenizer: Any, **values: Any) -> Iterator[None]:
    old = {k: getattr(tokenizer, k) for k in values}
    for k, v in values.items():
        setattr(tokenizer, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(tokenizer, k, v)


class TransformersTTSAdapter:
    name = "hf"
    version = "1"
    priority = 25
    batch_size = 1  # see the module docstring: per-utterance seeding needs one utterance per call

    @classmethod
    def claims(cls, model: str) -> bool:
        # hf:NAME, or a folder holding a transformers config.json (a folder of wavs that happens
        # to hold one stays wavdir's). A config of another kind is claimed to be refused clearly.
        if model.startswith(PREFIX):
            return True
        folder = Path(model)
        return (folder.is_dir() and read_config(folder) is not None
                and not any(p.is_file() for p in folder.glob("*.wav")))

    @classmethod
    def identity(cls, model: str) -> str | None:
        """hf:NAME as the commit the cache resolves it to (main moves; a sweep must not skip a new
        revision as already evaluated); a folder: None, its files are hashed."""
        if not model.startswith(PREFIX):
            return None
        repo, revision = parse_spec(model)
        from ..asr import hub

        folder = hub.cached(repo, ["config.json"], revision)
        return f"{PREFIX}{repo}@{folder.name}" if folder is not None else None

    def __init__(self, model: str, device: str = "cpu") -> None:
        if not _importable("transformers"):  # before anything slow: the one line that says what to install
            raise MissingExtra("transformers", "hf")
        self.model = model
        self.repo: str | None = None
        self.revision = ""
        if model.startswith(PREFIX):
            self.repo, asked = parse_spec(model)
            folder = self._from_hub(self.repo, asked)
            self.revision = folder.name  # the snapshot folder is named by the commit
            self.source = f"huggingface:{self.repo}@{self.revision}"
        else:
            folder = Path(model)
            if not folder.is_dir():
                raise EvalkitError(f"transformers model folder not found: {model}")
            self.source = "local"
        self.folder = folder
        config = read_config(folder)
        if config is None:
            raise EvalkitError(f"{model}: no transformers config.json with a model_type in {folder}")
        kind = config["model_type"]
        if kind not in SUPPORTED:
            what = "/".join(str(a) for a in config.get("architectures") or []) or kind
            why = NOT_SUPPORTED.get(kind, "not a text-to-speech model")
            raise EvalkitError(f"{model} is a {kind} model ({what}): {why}; the hf adapter loads "
                               f"{', '.join(f'{v} (model_type {k})' for k, v in SUPPORTED.items())}")
        self.digests = self._hash(folder)
        try:
            import transformers
            from transformers import AutoTokenizer, VitsModel
        except ImportError:
            raise MissingExtra("transformers", "hf") from None
        self.requested_device, self.device = device, _device(device)
        net: Any  # transformers' own annotations of .to() do not type-check
        try:
            with _quiet():
                net = VitsModel.from_pretrained(str(folder), local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # a mismatched or damaged checkpoint raises many types
            raise EvalkitError(f"{model}: not a loadable VITS model ({whole(exc)[:400]})") from None
        self.net: Any = net.to(self.device).eval()
        self.tokenizer: Any = tokenizer
        self._check_tokenizer()
        self.transformers_version = transformers.__version__
        cfg = self.net.config
        self.sample_rate = int(cfg.sampling_rate)
        self.num_speakers = int(getattr(cfg, "num_speakers", 1) or 1)
        self._uroman: Any = None
        self._letters = 0
        self._dropped: Counter[str] = Counter()

    # --- loading ------------------------------------------------------------------------------

    def _from_hub(self, repo: str, revision: str | None) -> Path:
        from ..asr import allow_hint, download_allowed, hub

        if not _importable("huggingface_hub"):
            raise MissingExtra("huggingface-hub", "hf")
        spec = f"{repo}@{revision}" if revision else repo
        folder = hub.cached(repo, (*HUB_FILES, *PICKLED), revision)
        lacking = self._lacking(folder) if folder is not None else "not in the Hugging Face cache"
        if lacking:
            if not download_allowed():
                raise EvalkitError(
                    f"{self.model} is not available offline: {spec} is {lacking} ({hub.cache_root()}). Fetch it "
                    f"with: {hub.fetch_command(repo, revision=revision)}, or {allow_hint()}")
            folder = hub.download(repo, HUB_FILES, revision)
            if not weight_files(folder):  # an older repository with pickled weights only
                folder = hub.download(repo, PICKLED, revision)
            lacking = self._lacking(folder)
            if lacking:
                raise EvalkitError(f"{spec} on the Hugging Face hub is {lacking}: not a transformers TTS model")
        assert folder is not None
        return folder

    @staticmethod
    def _lacking(folder: Path) -> str:
        if not (folder / "config.json").is_file():
            return "in the cache without its config.json"
        config = read_config(folder)
        if config is not None and config["model_type"] not in SUPPORTED:
            return ""  # said clearly once loaded: not a TTS model, whatever else is missing
        if not weight_files(folder):
            return "in the cache without its weights (model.safetensors or pytorch_model.bin)"
        return ""

    def _hash(self, folder: Path) -> dict[str, str]:
        """name -> sha256 of every file the model and its tokenizer are loaded from."""
        from ..asr import hub

        names = [n for n in (*CONFIG_FILES, *TOKENIZER_FILES) if (folder / n).is_file()]
        files = [folder / n for n in names] + weight_files(folder)
        if not weight_files(folder):
            raise EvalkitError(f"{self.model}: no weights in {folder} (model.safetensors or pytorch_model.bin)")
        out = {}
        for f in sorted(files):
            try:
                digest, problem = hub.checked_sha256(f)
            except OSError as exc:
                problem, digest = f"{f.name} cannot be read ({exc.strerror or exc})", ""
            if problem:
                again = (f"; fetch it again with: {hub.fetch_command(self.repo, again=True, revision=self.revision)}"
                         if self.repo else "")
                raise EvalkitError(f"{self.model}: {problem} (in {folder}){again}")
            out[f.name] = digest
        return out

    def _check_tokenizer(self) -> None:
        tok = self.tokenizer
        self.vocab: dict[str, int] = dict(tok.get_vocab())
        if not self.vocab:
            raise EvalkitError(f"{self.model}: its tokenizer has an empty vocabulary")
        self.vits_tokenizer = all(hasattr(tok, a) for a in ("normalize", "phonemize", "is_uroman", "normalize_text"))
        if not self.vits_tokenizer:
            return
        self.normalize, self.phonemize, self.romanize = bool(tok.normalize), bool(tok.phonemize), bool(tok.is_uroman)
        # Romanized here with one Uroman (transformers builds a new one, about 3 s, per call).
        tok.is_uroman = False
        if self.phonemize and not _importable("phonemizer"):
            raise EvalkitError(f"{self.model}: its tokenizer phonemizes the text with espeak through the phonemizer "
                               "package (tokenizer_config.json phonemize: true), which is not installed: "
                               "pip install phonemizer (and apt-get install espeak-ng)")

    # --- synthesis ----------------------------------------------------------------------------

    def _prepared(self, text: str) -> tuple[str, int, list[str]]:
        """(the text the tokenizer maps to ids, how many letters it had, the letters it lacks)."""
        tok = self.tokenizer
        t = tok.normalize_text(text) if self.normalize else text
        t = tok._preprocess_char(t) if hasattr(tok, "_preprocess_char") else t
        if self.romanize and _NON_ROMAN.search(t):
            t = self._romanizer().romanize_string(t)
        if self.phonemize:
            t, _ = tok.prepare_for_tokenization(t, normalize=False)
        letters = [c for c in t if c.isalnum()]
        lost = [c for c in letters if c not in self.vocab]
        if self.normalize or getattr(tok, "unk_token_id", None) is None:
            # What the tokenizer's normalization does: characters it has no symbol for go (without
            # normalization they would become <unk>, or, with no <unk> in the vocabulary, no id at all).
            t = "".join(c for c in t if c in self.vocab).strip()
        return t, len(letters), lost

    def _romanizer(self) -> Any:
        if self._uroman is None:
            try:
                import uroman
            except ImportError:
                raise UnreadableText("this model reads romanized text (tokenizer_config.json is_uroman: true), and "
                                     "the uroman package is not installed: pip install uroman") from None
            self._uroman = uroman.Uroman()
        return self._uroman

    def _encode(self, req: SynthesisRequest) -> Any:
        tok = self.tokenizer
        if not self.vits_tokenizer:
            ids = tok(req.text, return_tensors="pt")["input_ids"]
            unk = getattr(tok, "unk_token_id", None)
            if unk is not None and int((ids == unk).sum()) * 2 > ids.numel():
                raise UnreadableText("the model's tokenizer does not know most of this text")
            return ids
        text, letters, lost = self._prepared(req.text)
        if letters == 0:
            raise UnreadableText("this text has no letters to speak")
        if len(lost) > MAX_LOST * letters:
            unique = sorted(set(lost), key=lost.index)
            shown = ", ".join(unique[:8]) + (", ..." if len(unique) > 8 else "")
            languages = [f"tokenizer language {tok.language}"] if getattr(tok, "language", None) else []
            languages += [f"text language {req.language}"] if req.language else []
            # Short: a recorded failure keeps 200 characters, and the reason must survive in it.
            raise UnreadableText(
                f"the model's vocabulary lacks {len(lost)} of the {letters} letters of this text ({shown}): "
                "the model cannot read it" + (f" ({', '.join(languages)})" if languages else ""))
        if not text:
            raise UnreadableText("nothing in this text is in the model's vocabulary")
        self._letters += letters
        self._dropped.update(lost)
        with _flags(tok, normalize=False, phonemize=False):
            return tok(text, return_tensors="pt")["input_ids"]

    def _speaker(self, req: SynthesisRequest) -> int | None:
        n = self.num_speakers
        if req.speaker is None:
            return 0 if n > 1 else None
        if n <= 1:
            raise UnreadableText(f"the suite asks for speaker {req.speaker!r}, but this model has a single speaker "
                                 "(config.json num_speakers 1)")
        try:
            sid = int(req.speaker)
        except ValueError:
            sid = -1
        if not 0 <= sid < n:
            raise UnreadableText(f"speaker {req.speaker!r} is not a speaker id of this model (0..{n - 1})")
        return sid

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        import torch

        if self.net is None:
            raise RuntimeError("the hf adapter is closed")
        out = []
        for req in requests:
            ids = self._encode(req).to(self.device)
            speaker = self._speaker(req)
            torch.manual_seed(req.seed)
            with torch.inference_mode():
                wave = self.net(input_ids=ids, speaker_id=speaker).waveform
            out.append(as_audio(wave[0], self.sample_rate, f"{self.model} VitsModel"))
        return out

    def describe(self) -> dict[str, str]:
        import hashlib

        import torch

        cfg = self.net.config if self.net is not None else None
        manifest = "".join(f"{name}\n{digest}\n" for name, digest in sorted(self.digests.items()))
        weights = {n: d for n, d in self.digests.items() if n not in CONFIG_FILES + TOKENIZER_FILES}
        info = {
            "model": self.model,
            "model_path": str(self.folder.resolve()),
            "source": self.source,
            "model_revision": self.revision or "local",
            # One digest for everything that decides the audio: config, tokenizer and weights.
            "model_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
            "weights_sha256": json.dumps(weights, sort_keys=True),
            "files_sha256": json.dumps(self.digests, sort_keys=True),
            "model_type": "vits",
            "sample_rate": str(self.sample_rate),
            "device": self.device,
            "device_requested": self.requested_device,
            "adapter_version": self.version,
            "transformers_version": self.transformers_version,
            "torch_version": torch.__version__,
            "num_speakers": str(self.num_speakers),
            "text_letters_dropped": f"{sum(self._dropped.values())} of {self._letters}",
            "text_chars_dropped": "".join(c for c, _ in self._dropped.most_common(40)),
        }
        if cfg is not None:
            info.update({"noise_scale": str(cfg.noise_scale), "noise_scale_duration": str(cfg.noise_scale_duration),
                         "speaking_rate": str(cfg.speaking_rate)})
        language = getattr(self.tokenizer, "language", None) if self.tokenizer is not None else None
        if language:
            info["tokenizer_language"] = str(language)
        if self.vits_tokenizer:
            info["tokenizer_steps"] = ",".join(s for s, on in (("normalize", self.normalize), ("uroman", self.romanize),
                                                               ("phonemize", self.phonemize)) if on) or "none"
        if self._uroman is not None:
            info["uroman_version"] = _version("uroman")
        if self.num_speakers > 1:
            info["speaker_default"] = "0"
        return info

    def close(self) -> None:
        self.net = None
        self.tokenizer = None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
