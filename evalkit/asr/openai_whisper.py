"""openai-whisper (PyTorch Whisper): `--asr openai-whisper:base`, `openai-whisper:/path/model.pt`,
`openai-whisper:/path/to/ct2-model-dir` or `openai-whisper:NAME` for a Whisper name (large-v3,
turbo, small, ...: openai-whisper's own table) or any NAME.pt in openai-whisper's own cache
(~/.cache/whisper, XDG_CACHE_HOME respected), where `whisper.load_model(NAME)` puts it. A name
whose file is not there is downloaded only when the user allows it ($EVALKIT_ALLOW_DOWNLOAD), and
otherwise fails at once with the command that fetches it. A named file is checked against the
sha256 openai publishes in its download address, so a broken download is one clear line.

`base` runs the same bundled weights as faster-whisper:base, converted once from CTranslate2
into the evalkit cache (ct2_to_openai), so the two engines can check each other. Decoding
matches FasterWhisperASR: temperature 0 with no fallback, beam 5, all filters off, no
conditioning on previous text, no timestamps, the language always given; fp32 on CPU.

Clips of up to 30 s go through the encoder in batches (bitwise the same features as one at a
time on CPU) and are then decoded one by one: openai-whisper 20250625's beam search fails on
a batch of several clips (openai/whisper#2197), and one-clip decoding from precomputed
features is exactly what `whisper.transcribe` does for a single window. Longer clips go
through `whisper.transcribe` itself.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cache import cache_dir, sha256_file
from ..errors import EvalkitError, first_line
from ..types import Audio, Transcript
from . import allow_hint, ct2_to_openai, download_allowed
from .faster_whisper import bundled_base, ct2_model_sha256

# Keyword arguments of whisper.transcribe; the first four only steer its fallback/skip logic.
DECODE_OPTIONS = {
    "compression_ratio_threshold": None,
    "logprob_threshold": None,
    "no_speech_threshold": None,
    "condition_on_previous_text": False,
    "task": "transcribe",
    "temperature": 0.0,
    "beam_size": 5,
    "best_of": None,
    "without_timestamps": True,
}
_TRANSCRIBE_ONLY = ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold",
                    "condition_on_previous_text")
SAMPLE_RATE = 16000
ENCODER_BATCH = 4  # on 2 CPU cores, gains flatten out beyond 3-4 clips per encoder call
# The extra brings what openai-whisper uses; the package itself goes in without its declared
# dependencies, which name triton (about 1 GB, useless on CPU).
INSTALL_HINT = ("pip install 'evalkit-tts[openai-whisper]' && pip install --no-deps openai-whisper==20250625 "
                "(it declares triton)")


def whisper_cache() -> Path:
    """openai-whisper's own download folder (it is only read here)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whisper")


def _import_whisper():
    try:
        import whisper
    except ImportError as exc:
        # --no-deps keeps out triton (about 1 GB, useless on CPU).
        raise EvalkitError(f"openai-whisper is not usable ({exc.name or exc} missing): {INSTALL_HINT}") from None
    return whisper


def published() -> dict[str, str]:
    """openai-whisper's name -> download address table (whisper._MODELS), read from its source
    when it is not imported yet: importing it imports torch (1.5 s), and a bad name must fail at
    once. Empty when openai-whisper is not installed."""
    module = sys.modules.get("whisper")
    if module is not None:
        return dict(getattr(module, "_MODELS", {}))
    try:
        spec = importlib.util.find_spec("whisper")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return {}
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_MODELS"
                                                    for t in node.targets):
                return dict(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    return dict(_import_whisper()._MODELS)  # a layout this reader does not know: ask the module


_SHA256_IN_URL = re.compile(r"/([0-9a-f]{64})/[^/]+\.pt$")


def _published_sha256(url: str) -> str | None:
    """openai-whisper's download addresses carry the file's sha256 (its own _download checks it)."""
    m = _SHA256_IN_URL.search(url)
    return m.group(1) if m else None


def fetch_command(model: str) -> str:
    return f"python -c \"import whisper; whisper.load_model('{model}', device='cpu')\""


def _locate(model: str) -> tuple[Path | None, str | None]:
    """(the .pt to load, or None for CTranslate2 weights to convert (`base`, a model folder);
    openai's download address when MODEL is one of its names: a named file may not be
    downloaded yet, and is checked against the sha256 in that address)."""
    if model == "base" or (Path(model).is_dir() and (Path(model) / "model.bin").is_file()):
        return None, None
    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise EvalkitError(f"openai-whisper checkpoint not found: {model}")
        return Path(model), None
    names = published()
    url = names.get(model)
    # load_model names the file after its address: `large` is saved as large-v3.pt.
    cached = whisper_cache() / (os.path.basename(url) if url else f"{model}.pt")
    if cached.is_file() or (url and download_allowed()):
        return cached, url
    if url:
        raise EvalkitError(
            f"openai-whisper model {model!r} is not available offline: {cached} is missing. Fetch it with: "
            f"{fetch_command(model)}, or {allow_hint()}, or place {cached.name} in {whisper_cache()} "
            "('base' is bundled and needs no download)")
    if not names:  # openai-whisper is not installed: say that, not that the name is unknown
        _import_whisper()
    raise EvalkitError(f"unknown openai-whisper model {model!r}: use a Whisper name ({', '.join(names)}), "
                       f"a .pt checkpoint, a CTranslate2 model folder, or a NAME.pt in {whisper_cache()}")


def _download(model: str, url: str, target: Path) -> None:
    """Fetch openai's `model`.pt into openai-whisper's cache, as `whisper.load_model` would, but
    with a timeout (its urlopen has none) and into a temporary file renamed only once its
    sha256 is right (its _download writes the target in place: an interrupted run leaves a
    broken file behind)."""
    from . import DOWNLOAD_TIMEOUT  # read at the call: a test or a script may change it

    expected = _published_sha256(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(tmp, "wb") as out:
            size = response.headers.get("Content-Length")
            print(f"downloading {url} ({int(size) / 1e9:.2f} GB) to {target}" if size and size.isdigit()
                  else f"downloading {url} to {target}", file=sys.stderr, flush=True)
            h = hashlib.sha256()
            for block in iter(lambda: response.read(1 << 22), b""):
                h.update(block)
                out.write(block)
        if expected and h.hexdigest() != expected:
            raise EvalkitError(f"downloading {url} gave a file whose sha256 is {h.hexdigest()[:12]}..., not the "
                               f"published {expected[:12]}...; try again: {fetch_command(model)}")
        os.replace(tmp, target)
    except OSError as exc:  # URLError, timeouts and disk errors are all OSErrors
        cause = getattr(exc, "reason", None)  # URLError wraps the socket's error
        reason = first_line(cause if isinstance(cause, BaseException) else exc, 200, typed=True)
        raise EvalkitError(f"downloading openai-whisper {model} from {url} failed ({reason}); check the network, "
                           f"or fetch it where there is one: {fetch_command(model)}") from None
    finally:
        tmp.unlink(missing_ok=True)


class OpenAIWhisperASR:
    name = "openai-whisper"
    version = "1"

    @classmethod
    def available(cls) -> list[tuple[str, str]]:
        """(model, where it comes from) for every model this engine can load offline."""
        try:
            _import_whisper()
        except EvalkitError:
            return [("-", f"not installed: {INSTALL_HINT}")]
        found = [("base", "bundled Whisper base, converted once into the evalkit cache")]
        names = published()
        files = {p.name: p for p in sorted(whisper_cache().glob("*.pt"))}
        missing = []
        for name, url in names.items():
            path = files.get(os.path.basename(url))
            if path is None:
                if name != "base":
                    missing.append(name)
            elif name != "base":  # base.pt is not what `base` loads: that is the bundled copy
                found.append((name, f"openai-whisper cache: {path}"))
        named = {os.path.basename(url) for url in names.values()}
        found += [(p.stem, f"{p} (not an openai name: not checked against a published sha256)")
                  for file, p in files.items() if file not in named]
        if missing:
            found.append(("NAME", f"not in {whisper_cache()}: {', '.join(missing)}; fetch one with "
                                  f"`{fetch_command('NAME')}` or {allow_hint()}"))
        return found

    def __init__(self, model: str = "base", device: str = "cpu") -> None:
        checkpoint, url = _locate(model)  # before the import: a bad name fails at once
        whisper = _import_whisper()
        if checkpoint is not None and url is not None and not checkpoint.is_file():
            _download(model, url, checkpoint)
        ct2 = None
        if checkpoint is None:
            ct2 = bundled_base() if model == "base" else Path(model)
            self.model_sha256 = ct2_model_sha256(ct2)
            checkpoint = cache_dir("models") / f"openai-whisper-{self.model_sha256[:16]}.pt"
            if not checkpoint.is_file():
                ct2_to_openai.convert(ct2, checkpoint)
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = sha256_file(checkpoint)
        expected = _published_sha256(url) if url else None
        if expected and expected != self.checkpoint_sha256:
            raise EvalkitError(
                f"the openai-whisper cache entry {checkpoint} is broken: its sha256 is "
                f"{self.checkpoint_sha256[:12]}..., not the published {expected[:12]}... (a truncated or corrupted "
                f"download); fetch it again with: {fetch_command(model)}")
        if ct2 is None:
            self.model_sha256 = self.checkpoint_sha256
        self.model_name = model
        self.device = device
        self.fp16 = device.startswith("cuda")  # openai-whisper refuses fp16 on CPU anyway
        self._whisper = whisper
        self._ct2 = ct2
        self._model = None
        self._loading = threading.Lock()  # load() on evalkit.asr.preload's thread, transcribe() waits for it
        # Bitwise equality of batched encoder features is proven on CPU only.
        self.encoder_batch = ENCODER_BATCH if device == "cpu" else 1

    @property
    def model(self):
        """Loaded on first use (or by load()): a run whose transcripts are all cached never pays for it."""
        with self._loading:
            if self._model is None:
                self._model = self._load()
            return self._model

    def load(self) -> None:
        """Load the model now (evalkit.asr.preload), not on the first transcribe."""
        self.model  # noqa: B018  # the property loads it

    def _load(self):
        whisper, checkpoint, ct2 = self._whisper, self.checkpoint, self._ct2
        try:
            model = whisper.load_model(str(checkpoint), device=self.device)  # a path: never a download
        except Exception as exc:  # torch.load and load_state_dict raise many types for a bad file
            raise EvalkitError(f"{checkpoint}: not a loadable openai-whisper checkpoint "
                               f"({type(exc).__name__}: {str(exc)[:160]})") from None
        # load_model(path) keeps default alignment heads; only word timestamps read them.
        dims = model.dims
        if ct2 is not None and (ct2 / "config.json").is_file():
            model.set_alignment_heads(
                ct2_to_openai.alignment_heads_b85(ct2 / "config.json", dims.n_text_layer, dims.n_text_head))
        elif checkpoint.parent == whisper_cache() and self.model_name in whisper._ALIGNMENT_HEADS:
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[self.model_name])
        return model

    def transcribe(self, audio: Sequence[Audio], language: str) -> list[Transcript]:
        import torch
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

        whisper = self._whisper
        if language not in whisper.tokenizer.LANGUAGES:
            raise EvalkitError(f"openai-whisper does not know language {language!r}")
        transcribe_options = dict(DECODE_OPTIONS, language=language, fp16=self.fp16)
        texts = [""] * len(audio)
        windows = []  # (index, mel) of clips that fit in one 30 s window
        for i, a in enumerate(audio):
            if a.sample_rate != SAMPLE_RATE:
                raise ValueError(f"openai-whisper needs {SAMPLE_RATE} Hz audio, got {a.sample_rate}")
            x = np.ascontiguousarray(a.samples, dtype=np.float32)
            # Exactly whisper.transcribe's first window: mel of the clip plus 30 s of zeros, cut back.
            mel = log_mel_spectrogram(x, self.model.dims.n_mels, padding=N_SAMPLES)
            frames = mel.shape[-1] - N_FRAMES
            if frames > N_FRAMES:
                texts[i] = whisper.transcribe(self.model, x, verbose=None, **transcribe_options)["text"].strip()
            elif frames > 0:  # transcribe decodes nothing for an empty clip
                windows.append((i, pad_or_trim(mel[:, :frames], N_FRAMES)))
        options = whisper.DecodingOptions(
            language=language, fp16=self.fp16,
            **{k: v for k, v in DECODE_OPTIONS.items() if k not in _TRANSCRIBE_ONLY})
        tokenizer = whisper.tokenizer.get_tokenizer(
            self.model.is_multilingual, num_languages=self.model.num_languages, language=language, task="transcribe")
        dtype = torch.float16 if self.fp16 else torch.float32
        for start in range(0, len(windows), self.encoder_batch):
            chunk = windows[start:start + self.encoder_batch]
            with torch.no_grad():
                features = self.model.embed_audio(torch.stack([m for _, m in chunk]).to(self.model.device).to(dtype))
            for (i, _), f in zip(chunk, features, strict=True):
                tokens = whisper.decode(self.model, f[None], options)[0].tokens
                texts[i] = _text(tokenizer, tokens)
        return [Transcript(text=t, language=language) for t in texts]

    def describe(self) -> dict[str, str]:
        from . import description

        return description(self.name, self.model_name, self.model_sha256, self.device,
                           dict(DECODE_OPTIONS, fp16=self.fp16), weights_sha256=self.checkpoint_sha256,
                           checkpoint_sha256=self.checkpoint_sha256)


def _text(tokenizer, tokens: list[int]) -> str:
    """The text whisper.transcribe returns for one window's tokens (it blanks whitespace-only text)."""
    if not tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip():
        return ""
    return tokenizer.decode(tokens).strip()
