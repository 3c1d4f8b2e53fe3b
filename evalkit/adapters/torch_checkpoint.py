"""Your own PyTorch model: a .pt/.pth/.ckpt checkpoint that names the adapter which loads it.

The checkpoint names its adapter in one of two places (the sidecar wins, so a wrong name can be
fixed without rewriting a large checkpoint; its `config` is merged over the embedded one):

    torch.save({"model": net.state_dict(), "evalkit": {"adapter": "my-tts", "config": {...}}}, "ckpt.pt")
    ckpt.pt.evalkit.yaml:   adapter: my-tts     (optional: config: {...}, trust: true, step: 12000)

`adapter` is an entry point name (group `evalkit.adapters`), or "pkg.mod:Name" when you trust the
checkpoint (below): a name inside a file is checked against the installed entry points before
anything is imported, because importing a module runs its code ("this:x", "ctypes:cdll"). From
the command line, `--adapter pkg.mod:Name ckpt.pt` always works, and it also serves a checkpoint
that names nothing. That class is built with `Name.from_checkpoint(state, config, device)`;
subclass `TorchTTS` to write only that and `synthesize_one`.

Loading is `torch.load(weights_only=True)`: tensors, dicts, lists, numbers and strings only.
Unpickling anything else runs code chosen by whoever wrote the file, so it needs an explicit
opt-in for files you trust: `trust: true` in the sidecar or EVALKIT_TRUST_CHECKPOINTS=1 (never
from inside the checkpoint, which is the thing not yet trusted).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import plugins
from ..cache import sha256_file
from ..errors import EvalkitError, first_line, whole
from ..types import Audio, SynthesisRequest

SUFFIXES = (".pt", ".pth", ".ckpt")
SIDECAR_SUFFIX = ".evalkit.yaml"
SIDECAR_KEYS = {"adapter", "config", "trust", "step"}  # step: the training step, for evalkit sweep
TRUST_ENV = "EVALKIT_TRUST_CHECKPOINTS"
KEY = "evalkit"
HOWTO = ('save it with torch.save({..., "evalkit": {"adapter": "my-tts", "config": {...}}}, path), '
         "or write SIDECAR containing `adapter: my-tts` (an installed entry point name), "
         "or pass --adapter NAME|pkg.mod:Name")


def archive_kind(path: Path) -> str:
    """"torchscript", "export", "zip" (a torch.save zip) or "other", from the zip directory alone:
    nothing in the file is unpickled or executed."""
    try:
        if not zipfile.is_zipfile(path):
            return "other"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return "other"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or "/models/" in n for n in names):
        return "export"
    return "zip"


def as_audio(result: Any, sample_rate: int | None, who: str) -> Audio:
    """Audio from what a user's code returned: Audio, (waveform, rate), or a bare waveform of
    floats in [-1, 1]. Integer samples (16-bit PCM and the like) are refused, not converted: as
    floats they are thousands of times full scale, and would be scored clipped as if fine."""
    if isinstance(result, Audio):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        result, sample_rate = result
    if not sample_rate or int(sample_rate) <= 0:
        raise RuntimeError(f"{who} gave no sample rate: return (waveform, sample_rate) or set self.sample_rate")
    if hasattr(result, "detach"):  # a torch tensor, on any device
        if not (result.dtype.is_floating_point or result.dtype.is_complex or str(result.dtype) == "torch.bool"):
            _integer_samples(who, str(result.dtype).removeprefix("torch."), result.dtype.itemsize * 8,
                             result.dtype.is_signed)
        result = result.detach().to("cpu").float().numpy()
    x = np.asarray(result)
    if x.dtype.kind in "iu":
        _integer_samples(who, x.dtype.name, x.dtype.itemsize * 8, x.dtype.kind == "i")
    x = x.astype(np.float32, copy=False)
    if x.ndim > 1 and sum(d > 1 for d in x.shape) <= 1:
        x = x.reshape(-1)  # (1, T) and (T, 1) are mono too
    if x.ndim != 1:
        raise RuntimeError(f"{who} must return a mono 1-D waveform, got shape {tuple(x.shape)}")
    return Audio(np.ascontiguousarray(x), int(sample_rate))


def _integer_samples(who: str, dtype: str, bits: int, signed: bool) -> None:
    full = 2 ** (bits - 1)
    if bits > 32:  # int64 usually holds 16-bit values (a list of ints, torch.long)
        how = "x / 32768 for 16-bit PCM"
    else:
        how = f"x / {full}" if signed else f"(x - {full}) / {full}"
    raise RuntimeError(f"{who} returned {dtype} samples: return float32 in [-1, 1] (e.g. {how})")


def read_sidecar(path: Path) -> tuple[dict, Path | None]:
    """The checkpoint's sidecar (PATH.evalkit.yaml), checked, and its path; ({}, None) without one."""
    return _read_sidecar(path)


def _read_sidecar(path: Path) -> tuple[dict, Path | None]:
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return {}, None
    from ..untrusted import load_yaml

    # Bounded: a sidecar shipped beside a download is input from others (an alias bomb in
    # `config:` would otherwise blow up when the config is recorded).
    data = load_yaml(sidecar) or {}
    if not isinstance(data, dict):
        raise EvalkitError(f"{sidecar}: expected a mapping with `adapter:` (and optional `config:`, `trust:`)")
    unknown = set(data) - SIDECAR_KEYS
    if unknown:  # a typo such as `adaptor:` would otherwise be silently ignored
        raise EvalkitError(f"{sidecar}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                           f"(allowed: {', '.join(sorted(SIDECAR_KEYS))})")
    for key, kind, what in (("adapter", str, "an entry point name or pkg.mod:Name"), ("config", dict, "a mapping"),
                            ("trust", bool, "true or false"), ("step", int, "a whole number")):
        if key in data and (not isinstance(data[key], kind) or (key == "step" and isinstance(data[key], bool))):
            raise EvalkitError(f"{sidecar}: `{key}` must be {what}")
    return data, sidecar


def _load(path: Path, trust: bool, sidecar: Path) -> Any:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # torch's own advice ("Detected pickle protocol 4 ...") would be lines beside the one
            # that says what happened; warnings from the user's pickled classes still show.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        refused = None if trust else _refused(path, exc)
        if refused is None:
            raise EvalkitError(f"{path}: not a readable PyTorch checkpoint ({_weights_only_reason(exc)})") from None
        what, instead = refused
        raise EvalkitError(
            f"{path}: refused to unpickle {what} (loading with weights_only=True, because unpickling can run "
            f"arbitrary code from the file); {instead}, or, only if you trust this file, set {TRUST_ENV}=1 or put "
            f"`trust: true` in {sidecar}") from None


PLAIN_DATA = "save plain data instead (e.g. model.state_dict())"


def _refused(path: Path, exc: BaseException) -> tuple[str, str] | None:
    """(what was refused, what to save instead) when the weights-only loader refused a real
    pickle that opting in would load; None for a file that is simply not a checkpoint."""
    import pickle

    text = " ".join(str(exc).split())
    # "Unsupported global: GLOBAL pkg.Cls was not an allowed global", and for sys/os/posix/nt
    # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
    found = re.search(r"\bGLOBAL ([\w.]+)", text)
    if isinstance(exc, pickle.UnpicklingError) and found:
        name = found.group(1)
        if name.split(".")[0] == "numpy":
            return (f"the object {name} (a numpy array or scalar)",
                    "save tensors (torch.from_numpy(a)) or plain numbers (a.tolist()) instead")
        return f"the object {name}", PLAIN_DATA
    if "legacy .tar format" in text:  # a RuntimeError: the pre-0.4 format is only read unrestricted
        return "a checkpoint in the legacy .tar format", "re-save it with a current torch.save"
    if "TorchScript archive" in text and "weights_only" in text:
        return "a TorchScript archive", "run it without --adapter (evalkit loads it with torch.jit.load)"
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    # Random bytes fail inside the weights-only unpickler too ("Unsupported operand"): only a
    # well-formed pickle stream (parsed, never executed) is a real pickle that opting in would load.
    protocol = _pickle_protocol(path)
    if protocol is None:
        return None
    reason = re.search(r"WeightsUnpickler error: (.+?)(?: Check the documentation|$)", text)
    detail = reason.group(1).strip() if reason else re.sub(r"^Weights only load failed\. ", "", text)[:200]
    if protocol > 3 and "Unsupported operand" in detail:
        return (f"a protocol-{protocol} pickle, which the weights-only loader cannot read ({detail})",
                "re-save it with torch.save's default pickle protocol (no pickle_protocol=)")
    return f"what this pickle holds ({detail})", PLAIN_DATA


def _pickle_protocol(path: Path) -> int | None:
    """The protocol of the checkpoint's pickle if it is a complete, well-formed pickle stream:
    data.pkl of a torch.save zip, or the first pickle of the older format. Only parsed
    (pickletools), never unpickled."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if name is None:
                    return None
                with z.open(name) as f:
                    return _protocol_of(pickletools.genops(f))
        with open(path, "rb") as f:
            return _protocol_of(pickletools.genops(f))
    except Exception:  # not a pickle: ValueError, EOF, struct errors, a bad zip
        return None


def _protocol_of(ops) -> int | None:
    protocol = None
    for i, (op, arg, _pos) in enumerate(ops):
        if i == 0:
            if op.name != "PROTO":  # torch.save always writes protocol 2 or later
                return None
            protocol = int(arg)
        if op.name == "STOP":
            return protocol
    return None


def _weights_only_reason(exc: BaseException) -> str:
    found = re.search(r"WeightsUnpickler error: \s*(.+)", str(exc))
    return f"UnpicklingError: {found.group(1).strip()[:160]}" if found else first_line(exc, 160, typed=True)


def _user_class(ref: str | type, path: Path, source: str, trusted: bool) -> tuple[type[Any], str, str]:
    """(class, target "pkg.mod:Name", version of the package that provides it). A name read from
    the checkpoint or its sidecar is checked before anything is imported: an untrusted file may
    name only an installed entry point, because importing a module runs its code."""
    if isinstance(ref, type):
        target, dist = f"{ref.__module__}:{ref.__qualname__}", None
        cls = ref
    else:
        found = plugins.registered(plugins.ADAPTERS)
        where = "" if source == "--adapter" else f" (in its {source})"
        if ":" in ref and source != "--adapter" and not trusted:
            shown = ref if re.fullmatch(r"[\w.]+:[\w.]+", ref) else "pkg.mod:Name"
            raise EvalkitError(
                f"{path} names adapter {ref[:200]!r}{where} by module path, which evalkit does not import for an "
                f"untrusted checkpoint (importing a module runs its code): install the adapter and register it as "
                f"an entry point in group evalkit.adapters, then name it by that name (installed: "
                f"{', '.join(sorted(found)) or 'none'}), or pass --adapter {shown}, or, only if you trust this "
                f"file, set {TRUST_ENV}=1 or put `trust: true` in {path}{SIDECAR_SUFFIX}")
        if ":" not in ref and ref not in found:
            raise EvalkitError(f"{path} names adapter {ref[:200]!r}, which is not installed (installed "
                               f"adapters: {', '.join(sorted(found)) or 'none'}); pip install the package that "
                               "provides it")
        target, dist = (ref, None) if ":" in ref else found[ref]
        try:
            cls = plugins.load_target(target)
        except EvalkitError as exc:
            raise EvalkitError(f"{path} names adapter {ref!r}: {exc}") from exc
    if not callable(getattr(cls, "from_checkpoint", None)):
        raise EvalkitError(f"{path} names adapter {target!r}, which has no from_checkpoint(state, config, device) "
                           "(subclass evalkit.adapters.torch_checkpoint.TorchTTS)")
    return cls, target, _version(cls, target, dist)


def _version(cls: type, target: str, dist: str | None) -> str:
    if dist is None:  # a pkg.mod:Name target may still be registered by some distribution
        dist = next((d for t, d in plugins.registered(plugins.ADAPTERS).values() if t == target), None)
    top = cls.__module__.split(".")[0]
    if dist is None:
        dist = next(iter(importlib.metadata.packages_distributions().get(top, [])), None)
    if dist and dist != "?":
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            pass
    return str(getattr(sys.modules.get(top), "__version__", "unknown"))


def _load_pinned(path: Path, trust: bool) -> tuple[str, Any]:
    """(sha256, loaded object) of the same bytes."""
    before = os.stat(path)
    if before.st_size == 0:
        raise EvalkitError(f"{path}: empty file, not a PyTorch checkpoint")
    digest = sha256_file(path)
    state = _load(path, trust, Path(str(path) + SIDECAR_SUFFIX))
    after = os.stat(path)
    # Nightly jobs evaluate `last.ckpt` while training rewrites it: the digest must be of the
    # bytes that were loaded.
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise EvalkitError(f"{path} changed while it was being loaded; run again once it is written")
    return digest, state


def _spec(path: Path, state: Any, side: dict, adapter: str | type | None) -> tuple[str | type, dict, str]:
    """(adapter reference, config, where the reference came from)."""
    embedded = state.get(KEY) if isinstance(state, Mapping) else None
    if embedded is not None and not (isinstance(embedded, Mapping) and isinstance(embedded.get("adapter", ""), str)
                                     and isinstance(embedded.get("config") or {}, Mapping)):
        raise EvalkitError(f'{path}: the "{KEY}" entry must be a dict {{"adapter": str, "config": dict}}')
    embedded = embedded or {}
    ref = adapter or side.get("adapter") or embedded.get("adapter")
    if not ref:
        raise EvalkitError(f"{path} does not name its evalkit adapter: "
                           + HOWTO.replace("SIDECAR", str(path) + SIDECAR_SUFFIX))
    source = "--adapter" if adapter else "sidecar" if side.get("adapter") else "checkpoint"
    return ref, {**dict(embedded.get("config") or {}), **dict(side.get("config") or {})}, source


class TorchCheckpointAdapter:
    """Loads a checkpoint safely, builds the adapter it names, and adds provenance."""

    name = "torch"
    version = "1"
    priority = 10

    @classmethod
    def claims(cls, model: str) -> bool:
        # Every .pt/.pth/.ckpt file that is not a TorchScript or torch.export archive: only this
        # adapter can then say what the checkpoint lacks (an adapter that recognizes particular
        # checkpoints by itself goes before it with a priority below 10).
        p = Path(model)
        return p.suffix.lower() in SUFFIXES and p.is_file() and archive_kind(p) not in ("torchscript", "export")

    def __init__(self, model: str, device: str = "cpu", adapter: str | type | None = None) -> None:
        path = Path(model)
        if not path.is_file():
            raise EvalkitError(f"checkpoint not found: {model}")
        kind = archive_kind(path)
        if kind in ("torchscript", "export"):
            which = "torchscript" if kind == "torchscript" else "torch-export"
            raise EvalkitError(f"{path} is a {'TorchScript' if kind == 'torchscript' else 'torch.export'} archive, "
                               f"not a checkpoint: run it without --adapter (or with --adapter {which})")
        side, self.sidecar = _read_sidecar(path)
        self.trusted = side.get("trust") is True or os.environ.get(TRUST_ENV) == "1"
        self.digest, state = _load_pinned(path, self.trusted)
        ref, self.config, self.spec_source = _spec(path, state, side, adapter)
        cls, self.target, self.user_version = _user_class(ref, path, self.spec_source, self.trusted)
        self.requested_device, self.device = device, _device(device)
        try:
            self.inner = cls.from_checkpoint(state, self.config, self.device)
        except EvalkitError:
            raise
        except Exception as exc:  # a mismatched state dict is bad input, reported in one (whole) line
            raise EvalkitError(f"{path}: {self.target}.from_checkpoint failed ({whole(exc)})") from exc
        if not callable(getattr(self.inner, "synthesize", None)):
            raise EvalkitError(f"{self.target}.from_checkpoint returned {type(self.inner).__name__}, "
                               "which has no synthesize(requests)")
        self.model, self.path = model, path
        self.batch_size = max(1, int(getattr(self.inner, "batch_size", 1)))
        self._seen_rate: int | None = None

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        out = [as_audio(r, getattr(self.inner, "sample_rate", None), self.target)
               for r in self.inner.synthesize(requests)]
        if out:
            self._seen_rate = out[-1].sample_rate
        return out

    def describe(self) -> dict[str, str]:
        own = getattr(self.inner, "describe", None)
        info = {str(k): str(v) for k, v in (own() if callable(own) else {}).items()}
        rate = getattr(self.inner, "sample_rate", None) or self._seen_rate
        import torch

        info.update({
            "model": self.model,
            "model_path": str(self.path.resolve()),
            "model_sha256": self.digest,
            "sample_rate": str(rate or ""),
            "device": self.device,
            "device_requested": self.requested_device,
            "adapter_version": self.version,
            "user_adapter": self.target,
            "user_adapter_version": self.user_version,
            "adapter_source": self.spec_source,
            "adapter_config": json.dumps(self.config, sort_keys=True, default=str),
            "trusted_pickle": str(self.trusted).lower(),
            "torch_version": torch.__version__,
        })
        if self.sidecar:
            info["sidecar_sha256"] = sha256_file(self.sidecar)
        return info

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
        self.inner = None


def _device(device: str) -> str:
    """The device torch can use: the core resolves `auto` through ctranslate2, which sees a GPU
    that a CPU-only torch build cannot; that falls back to cpu (describe() records both)."""
    import torch

    if device in ("auto", "cuda") and not torch.cuda.is_available():
        return "cpu"
    return "cuda" if device == "auto" else device


class TorchTTS:
    """Base class for your adapter. Define two methods:

        @classmethod
        def from_checkpoint(cls, state: dict, config: dict, device: str) -> "TorchTTS":
            ...build your nn.Module from `state` (what torch.load returned) and `config`...
            return cls(module, device, sample_rate=22050)

        def synthesize_one(self, text: str, speaker: str | None, seed: int):
            return waveform  # 1-D tensor or array in [-1, 1], or (waveform, sample_rate)

    You get: the module moved to `device` in eval mode (`self.model`), `torch.manual_seed(seed)`
    before each utterance (so a clip does not depend on what was synthesized before it),
    `torch.inference_mode()`, conversion to mono float32, and the core's checks (empty, NaN/inf,
    silent, too long) with each failure recorded against its one utterance. `batch_size` is 1
    because the loop is per utterance; a model that really batches overrides
    `synthesize(requests) -> list[Audio]` and sets `batch_size`.
    """

    batch_size = 1
    sample_rate: int | None = None

    def __new__(cls, *args: Any, **kwargs: Any):
        # `--adapter my-tts ckpt.pt` builds every adapter as Adapter(model_path, device): route
        # that through the checkpoint loader, so a bare state dict works with this class too.
        if args and isinstance(args[0], (str, os.PathLike)):
            if len(args) > 2 or set(kwargs) - {"device"}:
                raise TypeError(f"{cls.__qualname__}(path, device) takes a checkpoint path and a device only")
            device = args[1] if len(args) > 1 else kwargs.get("device", "cpu")
            return TorchCheckpointAdapter(os.fspath(args[0]), device, adapter=cls)
        return super().__new__(cls)

    def __init__(self, model: Any = None, device: str = "cpu", sample_rate: int | None = None) -> None:
        self.device = device
        self.model = model.to(device).eval() if hasattr(model, "to") else model
        if sample_rate is not None:
            self.sample_rate = int(sample_rate)

    @classmethod
    def claims(cls, model: str) -> bool:
        return False  # the "torch" adapter claims checkpoints that name this class

    @classmethod
    def from_checkpoint(cls, state: Any, config: dict, device: str) -> TorchTTS:
        raise NotImplementedError(f"{cls.__qualname__} must define from_checkpoint(state, config, device)")

    def synthesize_one(self, text: str, speaker: str | None, seed: int) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must define synthesize_one(text, speaker, seed)")

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        import torch

        out = []
        for req in requests:
            torch.manual_seed(req.seed)
            with torch.inference_mode():
                result = self.synthesize_one(req.text, req.speaker, req.seed)
            out.append(as_audio(result, self.sample_rate, f"{type(self).__qualname__}.synthesize_one"))
        return out

    def describe(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self.model = None
