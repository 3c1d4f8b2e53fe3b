"""Convert a CTranslate2 Whisper model (the faster-whisper format) into an openai-whisper
checkpoint, so both engines can run on the very same weights offline.

The model.bin reader uses numpy only (no ctranslate2 import): layout and name mapping are
those of /work/shared/ENVIRONMENT.md, "openai-whisper on the bundled weights".
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import EvalkitError

# ctranslate2 dtype codes; 5 (bfloat16) has no numpy type: read as uint16, widened to float32.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}

_ATTN = {  # per-layer CT2 module -> openai module (q/k/v stacks are split separately)
    "self_attention/linear_1": "attn.out",
    "self_attention/layer_norm": "attn_ln",
    "attention/linear_0": "cross_attn.query",
    "attention/linear_2": "cross_attn.out",
    "attention/layer_norm": "cross_attn_ln",
    "ffn/linear_0": "mlp.0",
    "ffn/linear_1": "mlp.2",
    "ffn/layer_norm": "mlp_ln",
}
_TOP = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/position_encodings/encodings": "encoder.positional_embedding",
    "decoder/position_encodings/encodings": "decoder.positional_embedding",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/layer_norm": "decoder.ln",
    "decoder/embeddings/weight": "decoder.token_embedding.weight",
}
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(weight|bias|gamma|beta)$")


def _prologue(path: Path, take: Callable[[str], tuple], string: Callable[[], str]) -> int:
    """The header both readers check first (format version, spec); returns the variable count."""
    (version,) = take("I")
    if version != 6:
        raise EvalkitError(f"{path}: CTranslate2 binary version {version} (only 6 is supported)")
    spec = string()
    if spec != "WhisperSpec":
        raise EvalkitError(f"{path}: a {spec or 'unnamed'} model, not WhisperSpec")
    take("I")  # spec revision: the layout below does not depend on it
    (count,) = take("I")
    return int(count)


def read_ct2(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(variables, aliases) of a CTranslate2 model.bin; arrays are views of one file buffer."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        s = buf[pos:pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    try:
        count = _prologue(path, take, string)
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            (rank,) = take("B")
            shape = take(f"{rank}I") if rank else ()
            dtype_code, nbytes = take("BI")
            if dtype_code not in _DTYPES:
                raise EvalkitError(f"{path}: {name} has unknown dtype code {dtype_code}")
            arr = np.frombuffer(buf, dtype=_DTYPES[dtype_code], count=nbytes // np.dtype(_DTYPES[dtype_code]).itemsize,
                                offset=pos).reshape(shape)
            if dtype_code == 5:  # bfloat16 is the top half of a float32: exact
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            variables[name] = arr
            pos += nbytes
        (n_alias,) = take("I")
        aliases = {string(): string() for _ in range(n_alias)}
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path}: truncated or not a CTranslate2 model.bin ({exc})") from None
    if pos != len(buf):
        raise EvalkitError(f"{path}: {len(buf) - pos} unexpected bytes after the aliases")
    return variables, aliases


def ct2_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every variable's shape in a CTranslate2 Whisper model.bin, from the headers alone: the
    tensor bytes are seeked over, so checking a 3 GB large-v3 costs milliseconds. Raises
    EvalkitError when the file ends before its headers say it does (an interrupted download) or
    runs on after them."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:

        def take(fmt: str) -> tuple:
            want = struct.calcsize("<" + fmt)
            got = f.read(want)
            if len(got) < want:
                raise EvalkitError(f"{path}: truncated: the file ends at byte {size} inside its headers")
            return struct.unpack("<" + fmt, got)

        def string() -> str:
            (n,) = take("H")
            raw = f.read(n)
            if len(raw) < n:
                raise EvalkitError(f"{path}: truncated: the file ends at byte {size} inside its headers")
            return raw.rstrip(b"\0").decode()

        try:
            count = _prologue(path, take, string)
            shapes: dict[str, tuple[int, ...]] = {}
            for _ in range(count):
                name = string()
                (rank,) = take("B")
                shapes[name] = take(f"{rank}I") if rank else ()
                _dtype, nbytes = take("BI")
                end = f.tell() + nbytes
                if end > size:
                    raise EvalkitError(f"{path}: truncated: {size} bytes, but its headers put {name} up to byte {end}")
                f.seek(end)
            (n_alias,) = take("I")
            for _ in range(2 * n_alias):
                string()
        except UnicodeDecodeError as exc:
            raise EvalkitError(f"{path}: not a CTranslate2 model.bin ({exc})") from None
        if f.tell() != size:
            raise EvalkitError(f"{path}: {size - f.tell()} unexpected bytes after the aliases")
    return shapes


def state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, int], dict]:
    """(dims, openai-whisper state dict) from model.bin variables."""
    if any(name.endswith("weight_scale") for name in variables):
        raise EvalkitError("the CTranslate2 model is int8-quantized: convert it from a float16/float32 model instead")
    out = {}
    for name, arr in variables.items():
        if arr.ndim == 0:
            continue  # rank-0 entries are CT2 options, not weights
        module, _, param = name.rpartition("/")
        if param not in _PARAM and name not in _TOP:
            raise EvalkitError(f"unexpected CTranslate2 Whisper variable {name!r}")
        if name in _TOP or module in _TOP:
            out[_TOP[name] if name in _TOP else f"{_TOP[module]}.{_PARAM[param]}"] = arr
            continue
        m = _LAYER.match(name)
        if not m:
            raise EvalkitError(f"unexpected CTranslate2 Whisper variable {name!r}")
        side, layer, module, param = m.groups()
        prefix = f"{side}.blocks.{layer}."
        suffix = _PARAM[param]
        if module == "self_attention/linear_0":  # q, k, v stacked along rows
            for part, chunk in zip(("query", "key", "value"), np.split(arr, 3, axis=0), strict=True):
                # openai's key has no bias; CT2's is zero, and a key bias would shift all of a
                # query's scores equally, which softmax ignores anyway.
                if not (part == "key" and suffix == "bias"):
                    out[f"{prefix}attn.{part}.{suffix}"] = chunk
        elif module == "attention/linear_1":  # cross-attention k, v stacked
            for part, chunk in zip(("key", "value"), np.split(arr, 2, axis=0), strict=True):
                if not (part == "key" and suffix == "bias"):
                    out[f"{prefix}cross_attn.{part}.{suffix}"] = chunk
        elif module in _ATTN:
            out[f"{prefix}{_ATTN[module]}.{suffix}"] = arr
        else:
            raise EvalkitError(f"unexpected CTranslate2 Whisper variable {name!r}")

    def layers(side: str) -> int:
        return len({m.group(2) for m in map(_LAYER.match, variables) if m and m.group(1) == side})

    conv1 = variables["encoder/conv1/weight"]
    vocab, text_state = variables["decoder/embeddings/weight"].shape
    # Plain ints: load_model's torch.load(weights_only=True) refuses numpy scalars.
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": layers("encoder"),
        "n_vocab": int(vocab),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(text_state),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": layers("decoder"),
    }
    import torch

    return dims, {k: torch.from_numpy(v.copy()) for k, v in out.items()}  # copy: the file buffer is read-only


def convert(ct2_dir: Path, out_path: Path) -> Path:
    """Write `{"dims", "model_state_dict"}` for `whisper.load_model(out_path)`; atomic."""
    import torch

    variables, _aliases = read_ct2(Path(ct2_dir) / "model.bin")  # the one alias is the tied output projection
    dims, sd = state_dict(variables)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object, not a path: torch names the archive after a path's stem
            torch.save({"dims": dims, "model_state_dict": sd}, f)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def alignment_heads_b85(config_json: Path, n_text_layer: int, n_text_head: int) -> bytes:
    """config.json's [layer, head] pairs in the form `Whisper.set_alignment_heads` takes."""
    pairs = json.loads(Path(config_json).read_text()).get("alignment_heads")
    if not pairs:
        raise EvalkitError(f"{config_json}: no alignment_heads")
    mask = np.zeros((n_text_layer, n_text_head), dtype=bool)
    for layer, head in pairs:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0))  # mtime=0: same bytes every time
