"""torch.export archives (.pt2), end to end: a tiny text-to-waveform module exported with
torch.export.export and saved with torch.export.save, run as a user runs it (`evalkit run x.pt2`)."""

from __future__ import annotations

import copy
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_in_process
from test_adapter_claims import new_adapters  # noqa: F401  (used by pytestmark)

from evalkit.types import SynthesisRequest

torch = pytest.importorskip("torch")
# `evalkit run` finds the adapters through their entry points (see test_adapter_claims.new_adapters).
pytestmark = pytest.mark.usefixtures("new_adapters")

KO_TEXTS = ("감사합니다.", "같이 가요!", "괜찮아요?")


class TinyTTS(torch.nn.Module):
    """ids (1, T) -> (1, T * hop): an embedding per symbol, a frame of samples per symbol, and
    seeded noise, so the seed shows in the output."""

    def __init__(self, symbols: int, hop: int = 400, dim: int = 8) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(symbols, dim)
        self.proj = torch.nn.Linear(dim, hop)

    def forward(self, ids):
        frames = torch.tanh(self.proj(self.emb(ids))) * 0.5
        frames = frames + 0.05 * torch.randn_like(frames)
        return frames.reshape(1, -1).clamp(-1.0, 1.0)


def ko_vocab() -> dict[str, int]:
    chars = sorted({c for t in KO_TEXTS for c in t})
    return {c: i for i, c in enumerate(chars)}


def save_archive(path: Path, *, vocab: dict[str, int] | None = None, sample_rate: str | None = "22050",
                 dynamic: bool = True, example=None, module: torch.nn.Module | None = None) -> Path:
    torch.manual_seed(0)
    net = (module or TinyTTS(len(vocab) if vocab else 256)).eval()
    ids = example if example is not None else torch.tensor([[1, 2, 3]])
    shapes = {"ids": {1: torch.export.Dim("T", min=1, max=4096)}} if dynamic else None
    program = torch.export.export(net, (ids,), dynamic_shapes=shapes)
    extra = {}
    if sample_rate is not None:
        extra["sample_rate"] = sample_rate
    if vocab is not None:
        extra["vocab.json"] = json.dumps(vocab, ensure_ascii=False)
    torch.export.save(program, str(path), extra_files=extra)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('export-mlflow') / 'mlflow.db'}"


def evaluate(capsys, uri: str, out: Path, model: Path, suite: str = "ko-base", *extra: str):
    return run_in_process(capsys, "run", "--suite", suite, str(model), "--limit", "2", "--metrics", "dnsmos",
                          "--out", str(out), "--tracking-uri", uri, *extra)


@pytest.mark.slow
def test_export_archive_runs_with_no_flags_and_repeats_exactly(tmp_path, capsys, tracking_uri):
    """`evalkit run --suite ko-base model.pt2`: found by its contents, Korean text through the
    archive's vocab.json, its own sample rate, the archive's digest, the same clips twice."""
    archive = save_archive(tmp_path / "model.pt2", vocab=ko_vocab())
    wavs = []
    for attempt in ("a", "b"):
        code, _, stderr = evaluate(capsys, tracking_uri, tmp_path / attempt, archive)
        assert code == 0, stderr
        summary = json.loads((tmp_path / attempt / "summary.json").read_text(encoding="utf-8"))
        assert summary["adapter"] == "torch-export"
        model = summary["model"]
        assert model["model_sha256"] == sha256(archive) == summary["tags"]["evalkit.model_sha256"]
        assert model["sample_rate"] == "22050" and model["format"] == "torch.export"
        assert model["text_input"] == "vocab.json" and model["text_letters_dropped"] == "0 of 9"
        assert model["torch_version"] == torch.__version__ and model["trusted_pickle"] == "false"
        assert summary["aggregates"]["failures/count"] == 0
        wavs.append(sorted((tmp_path / attempt / "audio").glob("*.wav")))
    assert [w.name for w in wavs[0]] == ["ko-base-001.wav", "ko-base-002.wav"]
    for first, second in zip(*wavs, strict=True):
        assert first.read_bytes() == second.read_bytes()  # seeded: the same samples in a new run
        samples, rate = sf.read(first)
        assert rate == 22050 and np.abs(samples).max() > 0.1
        assert len(samples) == 400 * 6  # 6 symbols ("감사합니다." / "같이 가요!"), 400 samples each


def test_code_points_seeds_and_lengths(tmp_path):
    """Without vocab.json the ids are code points; the seed reaches the program's noise; longer
    text, longer audio; a clip does not depend on what was synthesized before it."""
    from evalkit.adapters.torch_export import TorchExportAdapter

    adapter = TorchExportAdapter(str(save_archive(tmp_path / "m.pt2", sample_rate="16000")))
    short, long_ = SynthesisRequest("a", "Hi there.", "en"), SynthesisRequest("b", "Hi there, how are you today?", "en")
    first = adapter.synthesize([short, long_])
    again = adapter.synthesize([long_, short])
    assert np.array_equal(first[0].samples, again[1].samples) and np.array_equal(first[1].samples, again[0].samples)
    assert len(first[0].samples) == 400 * len(short.text) < len(first[1].samples) == 400 * len(long_.text)
    assert first[0].sample_rate == 16000 and np.abs(first[0].samples).max() > 0.1
    reseeded = adapter.synthesize([SynthesisRequest("a", short.text, "en", seed=1)])[0]
    assert not np.array_equal(reseeded.samples, first[0].samples)
    described = adapter.describe()
    assert described["text_input"] == "unicode code points" and "text_letters_dropped" not in described
    adapter.close()


def test_text_the_vocabulary_cannot_spell_fails_that_utterance(tmp_path):
    from evalkit.adapters.torch_export import TorchExportAdapter, UnreadableText

    adapter = TorchExportAdapter(str(save_archive(tmp_path / "m.pt2", vocab=ko_vocab())))
    with pytest.raises(UnreadableText, match=r"vocab.json lacks 5 of the 5 letters of this text \(H, e, l, o\)"):
        adapter.synthesize([SynthesisRequest("a", "Hello", "en")])
    clip = adapter.synthesize([SynthesisRequest("b", "감사합니다 3", "ko")])[0]  # one letter in six lost: spoken
    assert len(clip.samples) == 400 * len("감사합니다 ")
    assert adapter.describe()["text_letters_dropped"] == "1 of 6"


def _repack(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            name = item.filename
            key = next((k for k in replace if name.endswith(k)), None)
            zout.writestr(item, replace[key] if key else zin.read(name))
    return dst


class Sneaky:
    """Pickled as a call of copy.copy: a global the weights-only loader refuses, and any function
    could stand where it stands."""

    def __init__(self, value) -> None:
        self.value = value

    def __reduce__(self):
        return copy.copy, (self.value,)


def pickled_archive(tmp_path: Path) -> Path:
    """An archive whose sample inputs are a pickle the weights-only loader refuses:
    torch.export.load then falls back to unpickling it with weights_only=False."""
    import io

    plain = save_archive(tmp_path / "plain.pt2", vocab=ko_vocab())
    buffer = io.BytesIO()
    torch.save(Sneaky(((torch.tensor([[1, 2, 3]]),), {})), buffer)
    return _repack(plain, tmp_path / "pickled.pt2", {"data/sample_inputs/model.pt": buffer.getvalue()})


BAD = {
    "no_sample_rate": ("no sample rate; save with torch.export.save(ep, path, extra_files={'sample_rate': '22050'})",),
    "fixed_length": ("takes a fixed length of 3 ids; export it with a dynamic length",
                     "dynamic_shapes={'ids': {1: torch.export.Dim('T')}}"),
    "float_input": ("the exported program takes float32[1, 2]; expected forward(ids: int64[1, T])",),
    "bad_vocab": ("extra file vocab.json must map single characters to ids",),
    "pickled": ("refused to load a torch.export archive that holds pickled objects", "data/sample_inputs/model.pt",
                "EVALKIT_TRUST_CHECKPOINTS=1"),
    "truncated": ("not a torch.export archive",),
}


def write_bad(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad.pt2"
    if kind == "no_sample_rate":
        return save_archive(path, sample_rate=None)
    if kind == "fixed_length":
        return save_archive(path, dynamic=False)
    if kind == "float_input":
        return save_archive(path, module=torch.nn.Linear(2, 2), example=torch.ones(1, 2), dynamic=False)
    if kind == "bad_vocab":
        return _repack(save_archive(tmp_path / "ok.pt2", vocab=ko_vocab()), path, {"extra/vocab.json": b'{"ab": 1}'})
    if kind == "pickled":
        return pickled_archive(tmp_path)
    good = save_archive(tmp_path / "ok.pt2").read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_archives_are_one_line_and_exit_2(tmp_path, capsys, kind):
    model = write_bad(kind, tmp_path)
    if kind == "truncated":  # a cut zip is not recognizably anything: named through --adapter
        extra: tuple[str, ...] = ("--adapter", "torch-export")
    else:
        extra = ()
    code, _, stderr = run_in_process(capsys, "run", "--suite", "ko-base", str(model), "--limit", "1",
                                     "--metrics", "dnsmos", "--out", str(tmp_path / "run"), *extra)
    line = one_line(stderr)
    assert code == 2, stderr
    for part in BAD[kind]:
        assert part in line, line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_trusted_pickles_load(tmp_path, monkeypatch):
    from evalkit.adapters.torch_export import TorchExportAdapter

    monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    adapter = TorchExportAdapter(str(pickled_archive(tmp_path)))
    assert adapter.describe()["trusted_pickle"] == "true"
    assert len(adapter.synthesize([SynthesisRequest("a", "감사", "ko")])[0].samples) == 800


def test_claims_and_other_adapters_pointing_here(tmp_path, tiny_tts):
    """An export archive is torch-export's whatever it is named; TorchScript archives and
    checkpoints are not; the torch and torchscript adapters, asked by name, point here."""
    from evalkit.adapters.torch_checkpoint import TorchCheckpointAdapter
    from evalkit.adapters.torch_export import TorchExportAdapter
    from evalkit.adapters.torchscript import TorchScriptAdapter
    from evalkit.errors import EvalkitError

    exported = save_archive(tmp_path / "e.pt2")
    renamed = save_archive(tmp_path / "e.pt")
    ckpt, scripted = tmp_path / "c.pt", tmp_path / "s.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"})
    tiny_tts.save_torchscript(scripted)
    assert TorchExportAdapter.claims(str(exported)) and TorchExportAdapter.claims(str(renamed))
    assert not TorchScriptAdapter.claims(str(exported)) and not TorchCheckpointAdapter.claims(str(renamed))
    assert not any(TorchExportAdapter.claims(str(p)) for p in (ckpt, scripted, tmp_path / "missing.pt2", tmp_path))
    with pytest.raises(EvalkitError, match=r"torch.export archive, not a checkpoint: .*--adapter torch-export"):
        TorchCheckpointAdapter(str(exported))
    with pytest.raises(EvalkitError, match=r"torch.export archive, not TorchScript: .*--adapter torch-export"):
        TorchScriptAdapter(str(exported))
