"""openai-whisper (PyTorch Whisper): `--asr openai-whisper:base`, `openai-whisper:/path/model.pt`,
`openai-whisper:/path/to/ct2-model-dir` or `openai-whisper:NAME` for a NAME.pt already in
openai-whisper's own cache (~/.cache/whisper, XDG_CACHE_HOME respected). Nothing is downloaded.

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

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cache import cache_dir, sha256_file
from ..errors import EvalkitError
from ..types import Audio, Transcript
from . import ct2_to_openai
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


def _unavailable(model: str) -> EvalkitError:
    cached = sorted(p.stem for p in whisper_cache().glob("*.pt"))
    found = f"; in {whisper_cache()}: {', '.join(cached)}" if cached else f"; {whisper_cache()} holds no .pt files"
    return EvalkitError(
        f"openai-whisper model {model!r} is not available offline (evalkit never downloads). Available: 'base' "
        f"(bundled weights){found}. Place {model}.pt in {whisper_cache()}, or pass a .pt checkpoint path or a "
        "CTranslate2 model folder")


def _locate(model: str) -> Path | None:
    """The .pt to load, or None for CTranslate2 weights (`base`, a model folder) to convert."""
    if model == "base" or (Path(model).is_dir() and (Path(model) / "model.bin").is_file()):
        return None
    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise EvalkitError(f"openai-whisper checkpoint not found: {model}")
        return Path(model)
    if (whisper_cache() / f"{model}.pt").is_file():
        return whisper_cache() / f"{model}.pt"
    raise _unavailable(model)


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
        found += [(p.stem, str(p)) for p in sorted(whisper_cache().glob("*.pt"))]
        return found

    def __init__(self, model: str = "base", device: str = "cpu") -> None:
        checkpoint = _locate(model)  # before the import: a bad name fails at once
        whisper = _import_whisper()
        ct2 = None
        if checkpoint is None:
            ct2 = bundled_base() if model == "base" else Path(model)
            self.model_sha256 = ct2_model_sha256(ct2)
            checkpoint = cache_dir("models") / f"openai-whisper-{self.model_sha256[:16]}.pt"
            if not checkpoint.is_file():
                ct2_to_openai.convert(ct2, checkpoint)
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = sha256_file(checkpoint)
        if ct2 is None:
            self.model_sha256 = self.checkpoint_sha256
        self.model_name = model
        self.device = device
        self.fp16 = device.startswith("cuda")  # openai-whisper refuses fp16 on CPU anyway
        self._whisper = whisper
        self._ct2 = ct2
        self._model = None
        # Bitwise equality of batched encoder features is proven on CPU only.
        self.encoder_batch = ENCODER_BATCH if device == "cpu" else 1

    @property
    def model(self):
        """Loaded on first use: a run whose transcripts are all cached never pays for it."""
        if self._model is None:
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
            self._model = model
        return self._model

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
