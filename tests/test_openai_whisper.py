"""openai-whisper on the bundled Whisper base weights: the CTranslate2 conversion, agreement with
faster-whisper on real Piper speech, the conversion cache, and failing fast (offline) on models
that are not there."""

from __future__ import annotations

import base64
import gzip
import hashlib
import socket

import jiwer
import numpy as np
import pytest

from evalkit.asr import ct2_to_openai
from evalkit.asr.faster_whisper import bundled_base
from evalkit.errors import EvalkitError
from evalkit.types import Audio, SynthesisRequest

# Not a declared dependency: a plain install pulls triton (about 1 GB); see ENVIRONMENT.md.
whisper = pytest.importorskip("whisper", reason="pip install --no-deps openai-whisper==20250625")

from evalkit.asr import openai_whisper  # noqa: E402
from evalkit.asr.openai_whisper import DECODE_OPTIONS, OpenAIWhisperASR  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The meeting has been moved to Thursday afternoon.",
    "A rainbow is a division of white light into many beautiful colors.",
    "She opened the window and listened to the rain.",
]


@pytest.fixture(scope="module")
def conversions(tmp_path_factory):
    """A fresh evalkit cache for this module, and a record of every conversion made into it."""
    calls = []
    real = ct2_to_openai.convert

    def counting(ct2_dir, out_path):
        calls.append(out_path)
        return real(ct2_dir, out_path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALKIT_CACHE", str(tmp_path_factory.mktemp("evalkit-cache")))
        mp.setattr(ct2_to_openai, "convert", counting)
        yield calls


@pytest.fixture(scope="module")
def ow(conversions):
    return OpenAIWhisperASR("base", "cpu")


@pytest.fixture(scope="module")
def clips(piper):
    from evalkit.audio import resample

    audio = piper.synthesize([SynthesisRequest(f"u{i}", s, "en") for i, s in enumerate(SENTENCES)])
    return [resample(a, 16000) for a in audio]


@pytest.fixture(scope="module")
def ow_texts(ow, clips):
    return [t.text for t in ow.transcribe(clips, "en")]


@pytest.mark.slow
def test_checkpoint_is_exactly_openai_whisper_base(ow, conversions, tmp_path):
    import torch

    assert len(conversions) == 1  # the module's fresh cache had to be filled once
    ckpt = torch.load(ow.checkpoint, weights_only=True)  # what load_model does: plain types only
    dims = ckpt["dims"]
    assert all(type(v) is int for v in dims.values())
    assert dims == {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6,
                    "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6}
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    expected = model.state_dict()
    got = ckpt["model_state_dict"]
    assert len(expected) == 245 and set(got) == set(expected)
    assert all(got[k].shape == expected[k].shape for k in expected)
    model.load_state_dict(got, strict=True)
    # The alignment heads from config.json are openai's own for base.
    official = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS["base"])), dtype=bool)
    assert np.array_equal(ow.model.alignment_heads.to_dense().numpy().ravel(), official)
    # Same weights, same bytes: the checkpoint digest in the settings digest is reproducible.
    again = ct2_to_openai.convert(bundled_base(), tmp_path / "again.pt")
    assert hashlib.sha256(again.read_bytes()).hexdigest() == ow.checkpoint_sha256


@pytest.mark.slow
def test_transcripts_match_faster_whisper(ow_texts, asr, clips):
    fw_texts = [t.text for t in asr.transcribe(clips, "en")]
    differing = [(a, b) for a, b in zip(ow_texts, fw_texts, strict=True) if a != b]
    assert len(differing) <= 1, differing
    assert jiwer.cer(fw_texts, ow_texts) < 0.02
    assert jiwer.cer(SENTENCES, ow_texts) < 0.05  # and both actually heard the sentences


@pytest.mark.slow
def test_batched_encoder_equals_one_clip_at_a_time(ow, ow_texts, clips):
    assert 1 < ow.encoder_batch < len(clips)  # a full batch and a remainder were both exercised
    options = dict(DECODE_OPTIONS, language="en", fp16=False)
    single = [whisper.transcribe(ow.model, a.samples, verbose=None, **options)["text"].strip() for a in clips]
    assert ow_texts == single


@pytest.mark.slow
def test_empty_clip_and_wrong_rate(ow):
    assert ow.transcribe([Audio(np.zeros(0, dtype=np.float32), 16000)], "en")[0].text == ""
    with pytest.raises(ValueError, match="16000 Hz"):
        ow.transcribe([Audio(np.zeros(22050, dtype=np.float32), 22050)], "en")
    with pytest.raises(EvalkitError, match="language"):
        ow.transcribe([Audio(np.zeros(16000, dtype=np.float32), 16000)], "xx")


@pytest.mark.slow
def test_second_construction_reuses_the_converted_checkpoint(ow, conversions):
    mtime, before = ow.checkpoint.stat().st_mtime_ns, len(conversions)
    again = OpenAIWhisperASR("base", "cpu")
    assert len(conversions) == before
    assert again.checkpoint == ow.checkpoint and again.checkpoint.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("name", ["tiny", "large-v3", "/nowhere/model.pt"])
def test_unavailable_model_fails_at_once_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty openai-whisper cache

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(whisper, "_download", no_network)
    # "At once": the name is refused before any weights are hashed, converted or loaded, and before
    # openai-whisper is even imported.
    touched = []

    def record(what, real):
        def wrapper(*args, **kwargs):
            touched.append(what)
            return real(*args, **kwargs)
        return wrapper

    for module, attr in [(openai_whisper, "_import_whisper"), (openai_whisper, "ct2_model_sha256"),
                         (openai_whisper, "sha256_file"), (ct2_to_openai, "convert"), (whisper, "load_model")]:
        monkeypatch.setattr(module, attr, record(attr, getattr(module, attr)))
    with pytest.raises(EvalkitError) as info:
        OpenAIWhisperASR(name, "cpu")
    assert touched == []
    message = str(info.value)
    if name.endswith(".pt"):
        assert "not found" in message and name in message
    else:
        assert "not available offline" in message and "'base'" in message
        assert f"place {name}.pt in {tmp_path / 'whisper'}" in message
        assert f"whisper.load_model('{name}', device='cpu')" in message and "EVALKIT_ALLOW_DOWNLOAD=1" in message


@pytest.mark.slow
def test_both_engines_report_the_same_weights(ow, asr):
    a, b = ow.describe(), asr.describe()
    assert a["model_sha256"] == b["model_sha256"]
    assert a["engine"] == "openai-whisper" and a["settings_digest"] != b["settings_digest"]
    assert a["checkpoint_sha256"] == ow.checkpoint_sha256 != a["model_sha256"]
    assert '"beam_size": 5' in a["options"] and '"fp16": false' in a["options"]


def test_missing_package_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "whisper", None)  # what an environment without it looks like
    with pytest.raises(EvalkitError, match="pip install --no-deps openai-whisper"):
        OpenAIWhisperASR("base", "cpu")


def test_truncated_model_bin_is_a_clear_error(tmp_path):
    with open(bundled_base() / "model.bin", "rb") as f:
        (tmp_path / "model.bin").write_bytes(f.read(4096))
    with pytest.raises(EvalkitError, match="truncated"):
        ct2_to_openai.convert(tmp_path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
