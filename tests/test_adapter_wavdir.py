"""The wavdir adapter on real espeak wavs rendered into a folder, scored through the core."""

import numpy as np
import pytest
import soundfile as sf

from evalkit import pipeline
from evalkit.adapters.wavdir import WavDirAdapter
from evalkit.audio import as_pcm16, write_wav
from evalkit.errors import EvalkitError
from evalkit.types import Suite, SynthesisRequest, Utterance

TEXTS = {"greet-01": "Good morning.", "greet-02": "See you tomorrow.", "ask-03": "Where is the station?"}


@pytest.fixture
def folder(tmp_path, espeak_en):
    root = tmp_path / "rendered"
    root.mkdir()
    for uid, text in TEXTS.items():
        write_wav(root / f"{uid}.wav", espeak_en.synthesize([SynthesisRequest(uid, text, "en")])[0])
    return root


def test_scores_the_folder_and_a_missing_id_fails_alone(folder, tmp_path, espeak_en):
    utts = tuple(Utterance(uid, text) for uid, text in TEXTS.items()) + (Utterance("lost-04", "Never rendered."),)
    suite = Suite("t", "1", "en", "test", utts, "d", "mem")
    adapter = WavDirAdapter(str(folder))
    rows = {r.utterance_id: r for r in pipeline.evaluate(suite, adapter, None, [], tmp_path / "run").rows}
    assert "expected" in rows["lost-04"].failure and str(folder / "lost-04.wav") in rows["lost-04"].failure
    for uid, text in TEXTS.items():
        assert rows[uid].failure is None
        saved, sr = sf.read(tmp_path / "run" / rows[uid].audio_path, dtype="float32")
        original = as_pcm16(espeak_en.synthesize([SynthesisRequest(uid, text, "en")])[0])
        assert sr == 22050
        np.testing.assert_array_equal(saved, original.samples)  # scored exactly what was in the folder
    info = adapter.describe()
    assert info["sample_rate"] == "22050" and info["files"] == "3" and info["model"] == str(folder)
    adapter.close()


def test_digest_follows_the_contents(folder, espeak_en):
    adapter = WavDirAdapter(str(folder))
    before = adapter.describe()["model_sha256"]
    assert WavDirAdapter(f"wavdir:{folder}").describe()["model_sha256"] == before
    write_wav(folder / "greet-02.wav", espeak_en.synthesize([SynthesisRequest("x", "See you later.", "en")])[0])
    changed = adapter.describe()["model_sha256"]
    assert changed != before
    (folder / "greet-02.wav").rename(folder / "greet-99.wav")
    assert adapter.describe()["model_sha256"] not in (before, changed)
    (folder / "notes.txt").write_text("not audio")  # only wavs count
    assert adapter.describe()["model_sha256"] == WavDirAdapter(str(folder)).describe()["model_sha256"]


def test_stereo_is_mixed_to_mono_and_ids_cannot_escape(folder):
    sf.write(folder / "wide.wav", np.stack([np.full(800, 0.5), np.full(800, 0.1)], axis=1), 16000)
    adapter = WavDirAdapter(str(folder))
    clip = adapter.synthesize([SynthesisRequest("wide", "x", "en")])[0]
    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32
    assert clip.samples[0] == pytest.approx(0.3, abs=1e-4) and clip.sample_rate == 16000
    (folder.parent / "outside.wav").write_bytes((folder / "wide.wav").read_bytes())
    with pytest.raises(ValueError, match="cannot name a file"):
        adapter.synthesize([SynthesisRequest("../outside", "x", "en")])


def test_claims_and_bad_folders(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert WavDirAdapter.claims(str(folder)) and WavDirAdapter.claims(f"wavdir:{empty}")
    assert not WavDirAdapter.claims(str(empty)) and not WavDirAdapter.claims(str(tmp_path / "nope"))
    assert not WavDirAdapter.claims(str(folder / "greet-01.wav"))  # a file is not a folder
    with pytest.raises(EvalkitError, match="no .wav files"):
        WavDirAdapter(f"wavdir:{empty}")
    with pytest.raises(EvalkitError, match="not found"):
        WavDirAdapter(str(tmp_path / "nope"))


def test_resolution_finds_the_folder(tmp_path, folder):
    """Among all installed adapters, in their resolution order, a folder of wavs goes to this one, even
    one named like a checkpoint (the torch adapters, asked first, claim files only)."""
    from evalkit.adapters import resolve

    named_like_a_checkpoint = tmp_path / "takes.pt"
    folder.rename(named_like_a_checkpoint)
    for model in (str(named_like_a_checkpoint), f"wavdir:{named_like_a_checkpoint}"):
        adapter = resolve(model)
        try:
            assert type(adapter) is WavDirAdapter and adapter.folder == named_like_a_checkpoint
            assert adapter.describe()["files"] == "3"
        finally:
            adapter.close()
