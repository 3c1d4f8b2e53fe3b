"""Hugging Face transformers TTS models, end to end: tiny random VITS models built with
transformers' own classes (VitsConfig, VitsModel, VitsTokenizer with a Hangul vocabulary), saved
with save_pretrained into tmp or laid out as a hub cache entry, and run as a user runs them
(`evalkit run FOLDER`, `evalkit run hf:NAME`). Nothing here reaches the network."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_in_process
from test_adapter_claims import new_adapters  # noqa: F401  (used by pytestmark)
from test_adapter_export import one_line

from evalkit.asr import ALLOW_DOWNLOAD_ENV
from evalkit.types import SynthesisRequest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
# `evalkit run` finds the adapter through its entry point (see test_adapter_claims.new_adapters).
pytestmark = pytest.mark.usefixtures("new_adapters")

REV = "89abcdef0123456789abcdef0123456789abcdef"
REPO = "evalkit-test/vits-ko-tiny"
LONG = "오늘 날씨가 정말 좋네요. 같이 가요!"
# Every character of the first ko-base sentences and of LONG: a Korean-capable vocabulary.
KO_TEXTS = ("감사합니다.", "같이 가요!", "괜찮아요?", LONG)
RATE = 22050


def build_vits(folder: Path, *, chars: str | None = None, num_speakers: int = 1, uroman: bool = False) -> Path:
    """A tiny random VITS model and its tokenizer, saved the way a trained one is."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if chars is None:
        chars = "".join(sorted({c for t in KO_TEXTS for c in t.lower() if c.isalnum()}))
    vocab = {"_": 0, " ": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    vocab["<unk>"] = len(vocab)
    vocab_file = folder / "source-vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), pad_token="_", unk_token="<unk>", language="kor", phonemize=False,
                              normalize=True, is_uroman=uroman)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, flow_size=16,
        spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]], duration_predictor_filter_channels=16,
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        depth_separable_num_layers=1, duration_predictor_num_flows=1, sampling_rate=RATE, speaking_rate=0.25,
        num_speakers=num_speakers, speaker_embedding_size=4 if num_speakers > 1 else 0)
    torch.manual_seed(0)
    VitsModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    vocab_file.unlink()
    return folder


@pytest.fixture(scope="module")
def ko_model(tmp_path_factory) -> Path:
    return build_vits(tmp_path_factory.mktemp("vits") / "vits-ko")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_digest(folder: Path) -> str:
    """What the adapter records as model_sha256: every file it loads, by name and content."""
    names = sorted(p.name for p in folder.iterdir() if p.name in (
        "config.json", "model.safetensors", "vocab.json", "tokenizer_config.json", "special_tokens_map.json"))
    return hashlib.sha256("".join(f"{n}\n{sha256(folder / n)}\n" for n in names).encode()).hexdigest()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('hf-mlflow') / 'mlflow.db'}"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    root = tmp_path / "hf-hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)
    return root


def put_in_hub(root: Path, repo: str, source: Path, *, corrupt: bool = False) -> Path:
    """`source`'s files laid out as huggingface_hub caches them: blobs named by content (the
    safetensors weights, an LFS file, by their sha256; the small files by a git hash),
    snapshots/REV/* linking to them, refs/main naming REV."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / REV
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REV)
    for f in sorted(source.iterdir()):
        data = f.read_bytes()
        lfs = f.suffix == ".safetensors"
        blob = blobs / (hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(data).hexdigest())
        blob.write_bytes(data[:-8] + b"\0" * 8 if lfs and corrupt else data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def evaluate(capsys, uri: str, out: Path, model: str, suite: str = "ko-base", *extra: str):
    return run_in_process(capsys, "run", "--suite", suite, model, "--limit", "2", "--metrics", "dnsmos",
                          "--out", str(out), "--tracking-uri", uri, *extra)


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


# --- as a user runs it ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_saved_folder_runs_with_no_flags_and_repeats_exactly(tmp_path, capsys, tracking_uri, ko_model):
    """`evalkit run --suite ko-base FOLDER`: found by its config.json, Korean through its own
    vocabulary, its own sample rate, every file digested, the same clips in a second run."""
    wavs = []
    for attempt in ("a", "b"):
        code, _, stderr = evaluate(capsys, tracking_uri, tmp_path / attempt, str(ko_model))
        assert code == 0, stderr
        summary = read_summary(tmp_path / attempt)
        model = summary["model"]
        assert summary["adapter"] == "hf" and summary["aggregates"]["failures/count"] == 0
        assert model["model_sha256"] == model_digest(ko_model) == summary["tags"]["evalkit.model_sha256"]
        assert json.loads(model["weights_sha256"]) == {"model.safetensors": sha256(ko_model / "model.safetensors")}
        assert model["model_revision"] == "local" and model["source"] == "local"
        assert model["sample_rate"] == str(RATE) and model["model_type"] == "vits"
        assert model["transformers_version"] == transformers.__version__ and model["torch_version"] == torch.__version__
        assert model["text_letters_dropped"] == "0 of 9" and model["tokenizer_language"] == "kor"
        assert model["noise_scale"] == "0.667" and model["tokenizer_steps"] == "normalize"
        wavs.append(sorted((tmp_path / attempt / "audio").glob("*.wav")))
    assert [w.name for w in wavs[0]] == ["ko-base-001.wav", "ko-base-002.wav"]
    for first, second in zip(*wavs, strict=True):
        assert first.read_bytes() == second.read_bytes()  # VITS samples: seeded per utterance
        samples, rate = sf.read(first)
        assert rate == RATE and np.abs(samples).max() > 0.05 and len(samples) > RATE // 10


@pytest.mark.slow
def test_a_hub_name_runs_from_the_cache_without_network(tmp_path, capsys, tracking_uri, ko_model, hub_cache):
    snapshot = put_in_hub(hub_cache, REPO, ko_model)
    for spec in (f"hf:{REPO}", f"hf:{REPO}@{REV}"):
        out = tmp_path / spec.rsplit("@", 1)[-1][:8]
        code, _, stderr = evaluate(capsys, tracking_uri, out, spec)
        assert code == 0, stderr
        model = read_summary(out)["model"]
        assert model["model"] == spec and model["model_revision"] == REV
        assert model["source"] == f"huggingface:{REPO}@{REV}" and model["model_path"] == str(snapshot.resolve())
        assert model["model_sha256"] == model_digest(ko_model)  # the same files: the same digest as the folder


def test_text_lengths_seeds_and_order(ko_model):
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter

    adapter = TransformersTTSAdapter(str(ko_model))
    short, long_ = SynthesisRequest("a", "감사합니다.", "ko"), SynthesisRequest("b", LONG, "ko")
    first = adapter.synthesize([short, long_])
    again = adapter.synthesize([long_, short])
    assert np.array_equal(first[0].samples, again[1].samples) and np.array_equal(first[1].samples, again[0].samples)
    assert len(first[1].samples) > 2 * len(first[0].samples)  # longer text, longer audio
    assert first[0].sample_rate == RATE and np.abs(first[0].samples).max() > 0.05
    reseeded = adapter.synthesize([SynthesisRequest("a", short.text, "ko", seed=1)])[0]
    assert not np.array_equal(reseeded.samples, first[0].samples)  # the seed reaches VITS's noise
    adapter.close()


def test_ids_are_the_tokenizers_own(ko_model, tmp_path):
    """The adapter runs the tokenizer's steps itself (to see what they drop, and to build uroman
    once): the ids are what the tokenizer alone gives, for a plain and a romanizing model."""
    pytest.importorskip("uroman")
    from transformers import AutoTokenizer

    from evalkit.adapters.transformers_tts import TransformersTTSAdapter

    roman = build_vits(tmp_path / "roman", chars="abcdefghijklmnopqrstuvwxyz", uroman=True)
    for folder in (ko_model, roman):
        adapter = TransformersTTSAdapter(str(folder))
        own = AutoTokenizer.from_pretrained(str(folder))
        for text in ("감사합니다.", LONG):
            assert adapter._encode(SynthesisRequest("a", text, "ko")).tolist() == [own(text)["input_ids"]]
    assert adapter.describe()["tokenizer_steps"] == "normalize,uroman" and "uroman_version" in adapter.describe()


def test_text_the_vocabulary_cannot_spell_fails_that_utterance(ko_model):
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter, UnreadableText

    adapter = TransformersTTSAdapter(str(ko_model))
    with pytest.raises(UnreadableText) as caught:
        adapter.synthesize([SynthesisRequest("a", "Hello there, how are you?", "en")])
    assert str(caught.value) == ("the model's vocabulary lacks 19 of the 19 letters of this text (h, e, l, o, t, r, w, "
                                 "a, ...): the model cannot read it (tokenizer language kor, text language en)")
    assert len(f"UnreadableText: {caught.value}") <= 200  # a recorded failure keeps 200 characters
    adapter.synthesize([SynthesisRequest("b", "감사합니다 3번", "ko")])  # 2 letters of 7 lost: spoken
    assert adapter.describe()["text_letters_dropped"] == "2 of 7" and adapter.describe()["text_chars_dropped"] == "3번"


@pytest.mark.slow
def test_a_suite_in_another_language_is_one_clear_line(tmp_path, capsys, tracking_uri, ko_model):
    """An English suite on a Korean vocabulary: every utterance fails with the reason, and the run
    says synthesis measured nothing (exit 4) instead of scoring noise."""
    code, _, stderr = evaluate(capsys, tracking_uri, tmp_path / "run", str(ko_model), "en-base")
    line = one_line(stderr)
    assert code == 4, stderr
    assert "synthesis" in line and "vocabulary lacks" in line
    assert "the model cannot read it (tokenizer language kor, text language en)" in line


def test_speakers(tmp_path, ko_model):
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter, UnreadableText

    multi = TransformersTTSAdapter(str(build_vits(tmp_path / "multi", num_speakers=3)))
    default, zero, two = (multi.synthesize([SynthesisRequest("a", "감사합니다.", "ko", s)])[0].samples
                          for s in (None, "0", "2"))
    assert np.array_equal(default, zero) and not np.array_equal(zero, two)
    assert multi.describe()["num_speakers"] == "3" and multi.describe()["speaker_default"] == "0"
    for bad in ("3", "f1"):
        with pytest.raises(UnreadableText, match=rf"speaker '{bad}' is not a speaker id of this model \(0\.\.2\)"):
            multi.synthesize([SynthesisRequest("a", "감사합니다.", "ko", bad)])
    single = TransformersTTSAdapter(str(ko_model))
    with pytest.raises(UnreadableText, match="asks for speaker 'f1', but this model has a single speaker"):
        single.synthesize([SynthesisRequest("a", "감사합니다.", "ko", "f1")])


# --- downloads: only when allowed -------------------------------------------------------------


def test_an_allowed_download_goes_into_the_hub_cache(hub_cache, monkeypatch, ko_model):
    """snapshot_download is replaced by a stand-in that lays the model out as the hub would: what
    is under test is that evalkit downloads only when allowed, into HF_HUB_CACHE, the files a
    VITS model needs (safetensors, not the pickled weights beside them)."""
    import huggingface_hub

    from evalkit.adapters import transformers_tts as hf
    from evalkit.asr import hub
    from evalkit.errors import EvalkitError

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(put_in_hub(Path(kwargs["cache_dir"]), repo_id, ko_model))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probe", lambda url, timeout: None)
    with pytest.raises(EvalkitError, match="not available offline"):
        hf.TransformersTTSAdapter(f"hf:{REPO}")
    assert [kw.get("local_files_only") for _, kw in calls] == [True]
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    adapter = hf.TransformersTTSAdapter(f"hf:{REPO}@main")
    repo, kwargs = calls[-1]
    assert repo == REPO and kwargs["cache_dir"] == str(hub_cache) and kwargs["revision"] == "main"
    assert kwargs["allow_patterns"] == list(hf.HUB_FILES) and not kwargs.get("local_files_only")
    assert adapter.describe()["model_revision"] == REV and adapter.describe()["model_sha256"] == model_digest(ko_model)


# --- bad input: one line, exit 2 --------------------------------------------------------------


def write_bad(kind: str, tmp_path: Path, ko_model: Path, hub_cache: Path) -> str:
    from transformers import BertConfig, BertModel, SpeechT5Config

    folder = tmp_path / kind
    if kind == "bert":
        BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=16)).save_pretrained(str(folder))
    elif kind == "speecht5":
        SpeechT5Config().save_pretrained(str(folder))
    elif kind == "no_weights":
        folder.mkdir()
        for f in ko_model.iterdir():
            if f.suffix != ".safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
    elif kind == "not_cached":
        return "hf:facebook/mms-tts-kor"
    elif kind == "corrupt_blob":
        put_in_hub(hub_cache, REPO, ko_model, corrupt=True)
        return f"hf:{REPO}"
    elif kind == "bad_spec":
        return "hf:no such/model"
    elif kind == "missing_extra":
        return str(ko_model)
    return str(folder)


BAD = {
    "bert": ("is a bert model (BertModel): not a text-to-speech model; the hf adapter loads VITS / MMS-TTS "
             "(model_type vits)",),
    "speecht5": ("is a speecht5 model", "SpeechT5 needs a vocoder repository and a speaker x-vector"),
    "no_weights": ("no weights in", "(model.safetensors or pytorch_model.bin)"),
    "not_cached": ("hf:facebook/mms-tts-kor is not available offline: facebook/mms-tts-kor is not in the Hugging "
                   "Face cache", "Fetch it with: hf download facebook/mms-tts-kor --cache-dir",
                   f"{ALLOW_DOWNLOAD_ENV}=1, or evalkit run --allow-download"),
    "corrupt_blob": ("model.safetensors has sha256", "not the hub's", "(a corrupted or interrupted download)",
                     f"hf download {REPO} --revision {REV}", "--force-download"),
    "bad_spec": ("expected hf:NAME or hf:NAME@REVISION",),
    "missing_extra": ("transformers is not installed: pip install '", "[hf]'"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_models_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, kind, ko_model, hub_cache):
    model = write_bad(kind, tmp_path, ko_model, hub_cache)
    if kind == "missing_extra":
        monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` does when absent
    capsys.readouterr()  # save_pretrained's own progress bar
    code, _, stderr = run_in_process(capsys, "run", "--suite", "ko-base", model, "--limit", "1",
                                     "--metrics", "dnsmos", "--out", str(tmp_path / "run"))
    line = one_line(stderr)
    assert code == 2, stderr
    for part in BAD[kind]:
        assert part in line, line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_missing_extra_through_a_module_path(monkeypatch, ko_model):
    """`--adapter evalkit.adapters.transformers_tts:TransformersTTSAdapter` skips the entry point's
    extra check: the adapter itself names the extra."""
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter
    from evalkit.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtra, match=r"transformers is not installed: pip install 'evalkit-tts\[hf\]'"):
        TransformersTTSAdapter(str(ko_model))


def test_a_hub_name_is_identified_by_the_revision_the_cache_holds(hub_cache, ko_model):
    """What a sweep's skip logic hashes for hf:NAME: the commit it resolves to, so a checkpoint
    pushed to main later is evaluated again, and hf:NAME and hf:NAME@COMMIT are one model."""
    from evalkit import adapters

    assert adapters.identity(f"hf:{REPO}") is None  # not cached: the spec's text is hashed, the run says why
    snapshot = put_in_hub(hub_cache, REPO, ko_model)
    assert adapters.identity(f"hf:{REPO}") == adapters.identity(f"hf:{REPO}@{REV}") == f"hf:{REPO}@{REV}"
    newer = "f" * 40
    shutil.copytree(snapshot, snapshot.with_name(newer), symlinks=True)
    (hub_cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(newer)
    assert adapters.identity(f"hf:{REPO}") == f"hf:{REPO}@{newer}"
    assert adapters.identity(str(ko_model)) is None  # a folder: its files are hashed by the runner
