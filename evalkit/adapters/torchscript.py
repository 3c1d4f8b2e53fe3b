"""A TorchScript archive (torch.jit.save): MODEL is a .pt/.pth/.ts/.torchscript file.

The scripted module's contract:

    forward(text: str) -> Tensor      1-D float waveform in [-1, 1] (a leading batch dim of 1 is fine)
    sample_rate: int                  a module attribute, or an exported method returning int;
                                      else the archive's extra file `sample_rate`, written with
                                      torch.jit.save(m, path, _extra_files={"sample_rate": "22050"})

torch.manual_seed(seed) runs before each utterance, so a module that samples is reproducible.
Loading runs no Python pickles, but it does run the archive's TorchScript code: load archives
you would run anyway. torch.export archives (.pt2) are the torch-export adapter's
(evalkit/adapters/torch_export.py): their inputs must be tensors, so text goes in as token ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from ..cache import sha256_file
from ..errors import EvalkitError, whole
from ..types import Audio, SynthesisRequest
from .torch_checkpoint import _device, archive_kind, as_audio

SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".pt2")
CONTRACT = "forward(text: str) -> Tensor"


class TorchScriptAdapter:
    name = "torchscript"
    version = "1"
    priority = 20
    batch_size = 1

    @classmethod
    def claims(cls, model: str) -> bool:
        # A torch.export archive is the torch-export adapter's, whatever its name ends with.
        p = Path(model)
        return p.suffix.lower() in SUFFIXES and p.is_file() and archive_kind(p) == "torchscript"

    def __init__(self, model: str, device: str = "cpu") -> None:
        import torch

        path = Path(model)
        if not path.is_file():
            raise EvalkitError(f"TorchScript archive not found: {model}")
        kind = archive_kind(path)
        if kind == "export":
            raise EvalkitError(f"{path} is a torch.export archive, not TorchScript: run it without --adapter (or with "
                               "--adapter torch-export)")
        if kind != "torchscript":
            raise EvalkitError(f"{path} is not a TorchScript archive (no code/ or constants.pkl inside)")
        self.digest = sha256_file(path)
        self.requested_device, device = device, _device(device)
        extra = {"sample_rate": ""}
        try:
            with warnings.catch_warnings():
                # torch.jit is deprecated, and still the format people ship.
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except Exception as exc:  # a damaged archive raises RuntimeError, ValueError, ...
            # The whole message: TorchScript's first line ("undefined value y:") says little
            # without the source excerpt that follows it.
            raise EvalkitError(f"{path}: not a loadable TorchScript archive ({whole(exc)})") from exc
        self.module.eval()
        self._check_forward(path)
        self.sample_rate = self._sample_rate(path, extra["sample_rate"])
        self.model, self.path, self.device = model, path, device

    def _check_forward(self, path: Path) -> None:
        try:
            schema = self.module.forward.schema
        except AttributeError:
            raise EvalkitError(f"{path}: the scripted module has no forward; expected {CONTRACT}") from None
        args = [str(a.type) for a in schema.arguments[1:]]
        if args != ["str"]:
            raise EvalkitError(f"{path}: forward takes ({', '.join(args)}); expected {CONTRACT}")

    def _sample_rate(self, path: Path, extra: bytes | str) -> int:
        value = getattr(self.module, "sample_rate", None)
        if callable(value):
            value = value()
        if value is None and extra:
            value = extra.decode() if isinstance(extra, bytes) else extra
        try:
            rate = int(value) if value is not None else 0
        except (TypeError, ValueError):
            rate = 0
        if rate <= 0:
            raise EvalkitError(f"{path}: no sample rate; give the module a `sample_rate: int` attribute or save with "
                               "torch.jit.save(m, path, _extra_files={'sample_rate': '22050'})")
        return rate

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        import torch

        out = []
        for req in requests:
            torch.manual_seed(req.seed)
            with torch.inference_mode():
                wave = self.module(req.text)
            out.append(as_audio(wave, self.sample_rate, f"{self.path.name} forward"))
        return out

    def describe(self) -> dict[str, str]:
        import torch

        return {
            "model": self.model,
            "model_path": str(self.path.resolve()),
            "model_sha256": self.digest,
            "sample_rate": str(self.sample_rate),
            "device": self.device,
            "device_requested": self.requested_device,
            "adapter_version": self.version,
            "format": "torchscript",
            "torch_version": torch.__version__,
        }

    def close(self) -> None:
        self.module = None
