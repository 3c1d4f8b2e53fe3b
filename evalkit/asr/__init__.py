"""ASR backends: `--asr ENGINE[:MODEL]`, ENGINE a registered `evalkit.asr` entry point name."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import threading
from collections.abc import Mapping
from functools import lru_cache

from .. import plugins
from ..errors import EvalkitError
from ..protocols import ASRBackend

DEFAULT = "faster-whisper:base"

# A Whisper model named on --asr that is in no local cache is downloaded only when this is set
# (`evalkit run --allow-download` sets it): a nightly job must never fetch gigabytes unasked, nor
# hang on a network that is not there.
ALLOW_DOWNLOAD_ENV = "EVALKIT_ALLOW_DOWNLOAD"
# Seconds a download may wait for the server to connect or send the next bytes. huggingface_hub
# sets no timeout on its first request, so a network that drops packets would hang a run.
DOWNLOAD_TIMEOUT = 10.0
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def download_allowed() -> bool:
    """Whether the user allowed downloading ASR models ($EVALKIT_ALLOW_DOWNLOAD)."""
    value = os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower()
    if value not in _YES + _NO:
        raise EvalkitError(f"{ALLOW_DOWNLOAD_ENV} must be 1 or 0, got {os.environ[ALLOW_DOWNLOAD_ENV]!r}")
    return value in _YES


def allow_hint() -> str:
    return f"let evalkit download it ({ALLOW_DOWNLOAD_ENV}=1, or evalkit run --allow-download)"


def resolve(spec: str = DEFAULT, device: str = "cpu", threads: int | None = None,
            options: Mapping[str, str] | None = None) -> ASRBackend:
    """The one factory for ASR models: each (spec, device, threads, options) is loaded once per
    process.

    `threads` is the number of CPU threads the backend may use (None: its own default); it is
    decided before construction (evalkit.pipeline.whisper_threads) and given to backends whose
    constructor takes a `threads` argument. It never changes a transcript, so it is not part
    of `describe()`. `options` (`--asr-option KEY=VALUE`) go to a backend whose constructor takes
    `options`; they may change transcripts, so the backend puts them in its settings digest."""
    engine, _, model = spec.partition(":")
    parameters = inspect.signature(plugins.load(plugins.ASR, engine)).parameters
    if "threads" not in parameters:
        threads = None  # one instance whatever was asked: this backend keeps its own default
    if options and "options" not in parameters:
        raise EvalkitError(f"--asr-option: ASR engine {engine} takes no options ({', '.join(sorted(options))})")
    return _construct(engine, model or "base", device, threads, tuple(sorted((options or {}).items())))


def preload(asr: ASRBackend) -> threading.Thread | None:
    """Start loading the backend's model on a thread (one with a `load()` method), while the caller
    loads the TTS model and synthesizes the first clips; its first transcribe waits for it. A
    load that fails is left to that transcribe, which fails its utterances with the reason. The
    caller joins the thread before it returns. None: nothing to load ahead."""
    load = getattr(asr, "load", None)
    if not callable(load):
        return None

    def run() -> None:
        with contextlib.suppress(Exception):
            load()

    thread = threading.Thread(target=run, name="evalkit-asr-load", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=4)
def _construct(engine: str, model: str, device: str, threads: int | None,
               options: tuple[tuple[str, str], ...] = ()) -> ASRBackend:
    cls = plugins.load(plugins.ASR, engine)
    kwargs: dict = {"threads": threads} if threads is not None else {}
    if options:
        kwargs["options"] = dict(options)
    return cls(model, device, **kwargs)


def description(engine: str, model: str, model_sha256: str, device: str, options: dict,
                weights_sha256: str | None = None, **extra: str) -> dict[str, str]:
    """A backend's describe(): provenance plus `settings_digest`, the one string that says
    whether two runs' transcripts are comparable (engine, the exact weights, decoding options).
    `weights_sha256` names the file actually loaded when it differs from the model digest."""
    options_json = json.dumps(options, sort_keys=True)
    digest = hashlib.sha256(f"{engine}|{weights_sha256 or model_sha256}|{options_json}".encode()).hexdigest()[:16]
    return {"engine": engine, "model": model, "model_sha256": model_sha256, **extra, "device": device,
            "options": options_json, "settings_digest": digest}
