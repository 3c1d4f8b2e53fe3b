"""A torch.export archive (torch.export.save): MODEL is a .pt2 file (or .pt/.pth/.ckpt/.ep holding one).

An exported program takes tensors, not strings, so the text goes in as token ids. The contract:

    forward(ids) -> Tensor        ids: int64 (or int32) of shape (1, T), or (T,), with T dynamic:
                                  torch.export.export(m, (ids,), dynamic_shapes={"ids": {1: Dim("T")}})
                                  returns the waveform, floats in [-1, 1]: (N,), (1, N), or a tuple
                                  whose first item is that (VITS-style (waveform, lengths))
    extra file `sample_rate`      required: torch.export.save(ep, path, extra_files={"sample_rate": "22050"})
    extra file `vocab.json`       optional: {"symbol": id, ...}, one character per symbol (a VITS
                                  vocab.json is one): each character of the text becomes its id;
                                  characters with no symbol are dropped, and an utterance that
                                  would lose more than half its letters fails (recorded), as for
                                  hf models. Without it the ids are the text's Unicode code points
                                  (ord(c) for each character, as the suite writes it).

This is the TorchScript adapter's `forward(text: str)` with the tokenizer moved out of the graph:
the simplest mapping from text to tensors that needs no code beside the archive. A model whose
front end (phonemizer, G2P) cannot be exported keeps it in its own adapter (a checkpoint adapter
or a TorchScript module). torch.manual_seed(seed) runs before each utterance, so a program that
samples (torch.randn_like inside it) is reproducible; the speaker is not passed.

Loading: torch.export.load unpickles whatever the archive pickled (tensor subclasses, opaque
objects, sample inputs that fail the weights-only loader), which can run code chosen by whoever
wrote the file. The archive is inspected first (without unpickling anything) and one that holds
such pickles is refused unless you trust it: EVALKIT_TRUST_CHECKPOINTS=1, as for checkpoints.
Plain exported models (parameters and buffers only) need no opt-in. The graph itself runs torch
operators only: no Python code from the file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cache import sha256_file
from ..errors import EvalkitError, whole
from ..types import Audio, SynthesisRequest
from .torch_checkpoint import TRUST_ENV, _device, archive_kind, as_audio

SUFFIXES = (".pt2", ".pt", ".pth", ".ckpt", ".ep")
CONTRACT = 'forward(ids: int64[1, T]) -> waveform, with T dynamic and extra file "sample_rate"'
MAX_VOCAB_BYTES = 10 * 2**20
MAX_LOST = 0.5


class UnreadableText(ValueError):
    """An utterance the archive's vocabulary cannot spell: recorded as that utterance's failure."""


def pickled_members(path: Path) -> list[str]:
    """What torch.export.load would unpickle without the weights-only loader: parsed from the
    archive's JSON configs and its .pt members (loaded with weights_only=True), never executed."""
    import torch

    found = []
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(("_weights_config.json", "_constants_config.json")) and "/data/" in f"/{name}":
                try:
                    config = json.loads(z.read(name)).get("config") or {}
                except (ValueError, AttributeError):
                    found.append(f"{name} (unreadable)")
                    continue
                constants = name.endswith("_constants_config.json")
                for fqn, meta in config.items():
                    meta = meta if isinstance(meta, dict) else {}
                    tensor = str(meta.get("path_name", "")).startswith("tensor_")
                    if meta.get("use_pickle") or (constants and not tensor):
                        found.append(f"{fqn} ({name})")
            elif name.endswith(".pt") and "/data/" in f"/{name}":
                try:
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception:  # what the weights-only loader refuses, torch.export.load would unpickle
                    found.append(name)
    return found


class TorchExportAdapter:
    name = "torch-export"
    version = "1"
    priority = 21
    batch_size = 1

    @classmethod
    def claims(cls, model: str) -> bool:
        p = Path(model)
        return p.suffix.lower() in SUFFIXES and p.is_file() and archive_kind(p) == "export"

    def __init__(self, model: str, device: str = "cpu") -> None:
        import torch

        path = Path(model)
        if not path.is_file():
            raise EvalkitError(f"torch.export archive not found: {model}")
        if archive_kind(path) != "export":
            raise EvalkitError(f"{path} is not a torch.export archive (no archive_format or models/ inside); "
                               "save one with torch.export.save(torch.export.export(model, (ids,), ...), 'model.pt2')")
        with zipfile.ZipFile(path) as z:
            if not any("/models/" in f"/{n}" and n.endswith(".json") for n in z.namelist()):
                raise EvalkitError(f"{path} holds no exported program (models/*.json): an AOTInductor package? "
                                   "evalkit loads archives written by torch.export.save")
        self.trusted = os.environ.get(TRUST_ENV) == "1"
        before = os.stat(path)
        self.digest = sha256_file(path)
        if not self.trusted:
            pickles = pickled_members(path)
            if pickles:
                raise EvalkitError(
                    f"{path}: refused to load a torch.export archive that holds pickled objects "
                    f"({', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''}): torch.export.load unpickles "
                    "them, which can run code chosen by whoever wrote the file; export plain tensors, or, only if "
                    f"you trust this file, set {TRUST_ENV}=1")
        extra = {"sample_rate": "", "vocab.json": ""}
        # torch's note that it fell back to unpickling (a trusted archive) is a malformed log call
        # in torch 2.13 ("not enough arguments for format string"): logging would print a traceback.
        serde_log = logging.getLogger("torch._export.serde.serialize")
        disabled, serde_log.disabled = serde_log.disabled, True
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as exc:  # a damaged archive or an unknown operator raise many types
            raise EvalkitError(f"{path}: not a loadable torch.export archive ({whole(exc)[:400]})") from None
        finally:
            serde_log.disabled = disabled
        if (before.st_size, before.st_mtime_ns) != (os.stat(path).st_size, os.stat(path).st_mtime_ns):
            raise EvalkitError(f"{path} changed while it was being loaded; run again once it is written")
        self.input_dtype, self.input_rank = self._check_input(path, program)
        self.sample_rate = self._sample_rate(path, extra["sample_rate"])
        self.vocab = self._vocab(path, extra["vocab.json"])
        self.requested_device, self.device = device, _device(device)
        if self.device != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self.device)
        self.module: Any = program.module()
        self.model, self.path = model, path
        self._letters = 0
        self._dropped = 0

    @staticmethod
    def _check_input(path: Path, program: Any) -> tuple[Any, int]:
        import torch

        users = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        metas = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
        if len(users) != 1:
            raise EvalkitError(f"{path}: the exported program takes {len(users)} inputs; expected {CONTRACT}")
        val = metas.get(users[0])
        shape, dtype = tuple(getattr(val, "shape", ())), getattr(val, "dtype", None)
        if dtype not in (torch.int64, torch.int32) or len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
            shown = f"{str(dtype).removeprefix('torch.')}{list(shape)}"
            raise EvalkitError(f"{path}: the exported program takes {shown}; expected {CONTRACT}")
        if isinstance(shape[-1], int):
            raise EvalkitError(f"{path}: the exported program takes a fixed length of {shape[-1]} ids; export it with "
                               f"a dynamic length: dynamic_shapes={{'{users[0]}': {{{len(shape) - 1}: "
                               "torch.export.Dim('T')}}")
        return dtype, len(shape)

    @staticmethod
    def _sample_rate(path: Path, extra: bytes | str) -> int:
        value = extra.decode() if isinstance(extra, bytes) else extra
        try:
            rate = int(value.strip()) if value else 0
        except ValueError:
            rate = 0
        if rate <= 0:
            raise EvalkitError(f"{path}: no sample rate; save with "
                               "torch.export.save(ep, path, extra_files={'sample_rate': '22050'})")
        return rate

    @staticmethod
    def _vocab(path: Path, extra: bytes | str) -> dict[str, int] | None:
        text = extra.decode("utf-8", "replace") if isinstance(extra, bytes) else extra
        if not text:
            return None
        try:
            vocab = json.loads(text) if len(text) <= MAX_VOCAB_BYTES else None
        except ValueError:
            vocab = None
        if not (isinstance(vocab, dict) and vocab and all(isinstance(k, str) and len(k) == 1 and isinstance(v, int)
                                                          and not isinstance(v, bool) and v >= 0
                                                          for k, v in vocab.items())):
            raise EvalkitError(f"{path}: extra file vocab.json must map single characters to ids ({{\"a\": 3, ...}})")
        return vocab

    def _ids(self, text: str) -> list[int]:
        if self.vocab is None:
            return [ord(c) for c in text]
        letters = [c for c in text if c.isalnum()]
        lost = [c for c in letters if c not in self.vocab]
        if not letters or len(lost) > MAX_LOST * len(letters):
            unique = sorted(set(lost), key=lost.index)
            shown = ", ".join(unique[:8]) + (", ..." if len(unique) > 8 else "")
            raise UnreadableText(f"the archive's vocab.json lacks {len(lost)} of the {len(letters)} letters of this "
                                 f"text ({shown})")
        self._letters += len(letters)
        self._dropped += len(lost)
        return [self.vocab[c] for c in text if c in self.vocab]

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        import torch

        if self.module is None:
            raise RuntimeError("the torch-export adapter is closed")
        out = []
        for req in requests:
            ids = torch.tensor(self._ids(req.text), dtype=self.input_dtype, device=self.device)
            if self.input_rank == 2:
                ids = ids.unsqueeze(0)
            torch.manual_seed(req.seed)
            with torch.inference_mode():
                result = self.module(ids)
            if isinstance(result, (tuple, list)) and result:
                result = result[0]
            out.append(as_audio(result, self.sample_rate, f"{self.path.name} forward"))
        return out

    def describe(self) -> dict[str, str]:
        import torch

        info = {
            "model": self.model,
            "model_path": str(self.path.resolve()),
            "model_sha256": self.digest,
            "sample_rate": str(self.sample_rate),
            "device": self.device,
            "device_requested": self.requested_device,
            "adapter_version": self.version,
            "format": "torch.export",
            "text_input": "vocab.json" if self.vocab is not None else "unicode code points",
            "trusted_pickle": str(self.trusted).lower(),
            "torch_version": torch.__version__,
        }
        if self.vocab is not None:
            info["text_letters_dropped"] = f"{self._dropped} of {self._letters}"
        return info

    def close(self) -> None:
        self.module = None
