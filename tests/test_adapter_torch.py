"""Your own PyTorch model, end to end: a real tiny text-to-waveform model (tests/plugins/tiny_tts),
registered through an entry point, found from the checkpoint alone (`evalkit run ckpt.pt`)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_e2e import run_in_process

from evalkit.errors import StageFailed
from evalkit.types import SynthesisRequest


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One store for every run here: creating a sqlite MLflow store costs ~8 s, a run in it ~0.5 s."""
    return f"sqlite:///{tmp_path_factory.mktemp('torch-mlflow') / 'mlflow.db'}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate(capsys, uri: str, tmp_path: Path, model: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "run"
    code, _, stderr = run_in_process(capsys, "run", "--suite", "en-base", str(model), "--limit", "2",
                                     "--metrics", "dnsmos", "--out", str(out), "--tracking-uri", uri, *extra)
    return code, stderr, out


def read_run(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, rows


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_checkpoint_runs_with_no_flags(tmp_path, tracking_uri, tiny_tts):
    """The product promise, as a user types it: a fresh process, MODEL only, the adapter found
    through the checkpoint's `evalkit` key and the plugin's entry point."""
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts", "config": {"model": {"dim": 16}}})
    out = tmp_path / "run"
    proc = run_cli("run", "--suite", "en-base", str(ckpt), "--limit", "2", "--metrics", "dnsmos",
                   "--out", str(out), "--tracking-uri", tracking_uri)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary, rows = read_run(out)
    model = summary["model"]
    assert summary["adapter"] == "torch"
    assert model["model_sha256"] == sha256(ckpt) == summary["tags"]["evalkit.model_sha256"]
    assert model["user_adapter"] == "tiny_tts:TinyTTS"
    assert model["user_adapter_version"] == "evalkit-test-tiny-tts 0.1.0"
    assert model["adapter_source"] == "checkpoint" and model["trusted_pickle"] == "false"
    assert model["sample_rate"] == "16000" and model["device"] == "cpu"
    assert summary["aggregates"]["failures/count"] == 0
    assert all(1.0 <= r["dnsmos_ovrl"] <= 5.0 for r in rows)
    assert len(list((out / "audio").glob("*.wav"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sidecar", "target"])
def test_checkpoint_named_by_sidecar_or_target(tmp_path, capsys, tracking_uri, tiny_tts, how, monkeypatch):
    ckpt = tmp_path / "ckpt.pth"
    if how == "sidecar":  # an existing checkpoint, never rewritten: the name lives beside it
        tiny_tts.save_checkpoint(ckpt)
        Path(str(ckpt) + ".evalkit.yaml").write_text("adapter: tiny-tts\nconfig:\n  model: {dim: 16}\n")
    else:  # a module path inside a file is imported only for a trusted checkpoint (test_hardening_torch)
        tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny_tts:TinyTTS"})
        monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    code, stderr, out = evaluate(capsys, tracking_uri, tmp_path, ckpt)
    assert code == 0, stderr
    summary, _ = read_run(out)
    assert summary["model"]["model_sha256"] == sha256(ckpt)
    assert summary["model"]["adapter_source"] == ("sidecar" if how == "sidecar" else "checkpoint")
    assert summary["model"]["trusted_pickle"] == ("false" if how == "sidecar" else "true")
    assert summary["model"]["user_adapter"] == "tiny_tts:TinyTTS"
    assert summary["aggregates"]["failures/count"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sample_rate_as", ["attribute", "extra"])
def test_torchscript_archive_runs_with_no_flags(tmp_path, capsys, tracking_uri, tiny_tts, sample_rate_as):
    archive = tmp_path / "model.pt"
    tiny_tts.save_torchscript(archive, sample_rate_as)
    code, stderr, out = evaluate(capsys, tracking_uri, tmp_path, archive)
    assert code == 0, stderr
    summary, rows = read_run(out)
    assert summary["adapter"] == "torchscript"
    assert summary["model"]["model_sha256"] == sha256(archive)
    assert summary["model"]["sample_rate"] == "16000"
    assert summary["aggregates"]["failures/count"] == 0
    assert len(rows) == 2 and all(math.isfinite(r["dnsmos_ovrl"]) and 1.0 <= r["dnsmos_ovrl"] <= 5.0 for r in rows)


def test_scripted_and_checkpoint_models_give_the_same_audio(tmp_path, tiny_tts):
    """Both paths seed each utterance the same way, so one model gives one waveform, in any batch."""
    from evalkit.adapters.torch_checkpoint import TorchCheckpointAdapter
    from evalkit.adapters.torchscript import TorchScriptAdapter

    ckpt, archive = tmp_path / "ckpt.pt", tmp_path / "model.ts"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"})
    tiny_tts.save_torchscript(archive)
    short, long_ = SynthesisRequest("a", "Hi there.", "en"), SynthesisRequest("b", "Hi there, how are you today?", "en")
    eager, scripted = TorchCheckpointAdapter(str(ckpt)), TorchScriptAdapter(str(archive))
    first = eager.synthesize([short, long_])
    again = eager.synthesize([long_, short, short])
    assert np.array_equal(first[0].samples, again[1].samples) and np.array_equal(again[1].samples, again[2].samples)
    assert np.array_equal(first[1].samples, again[0].samples)
    assert len(first[1].samples) > len(first[0].samples)  # longer text, longer audio
    assert np.array_equal(scripted.synthesize([short])[0].samples, first[0].samples)
    reseeded = eager.synthesize([SynthesisRequest("a", "Hi there.", "en", seed=1)])[0]
    assert not np.array_equal(reseeded.samples, first[0].samples)  # the seed reaches the model's noise


@pytest.mark.slow
def test_adapter_flag_loads_a_bare_state_dict(tmp_path, capsys, tracking_uri, tiny_tts):
    """`--adapter tiny-tts` for a checkpoint that names nothing: the class routes itself through the loader."""
    ckpt = tmp_path / "bare.ckpt"
    tiny_tts.save_checkpoint(ckpt)
    code, stderr, out = evaluate(capsys, tracking_uri, tmp_path, ckpt, "--adapter", "tiny-tts")
    assert code == 0, stderr
    summary, _ = read_run(out)
    assert summary["model"]["adapter_source"] == "--adapter" and summary["model"]["model_sha256"] == sha256(ckpt)


def test_cuda_without_a_cuda_torch_falls_back_to_cpu_and_says_so(tmp_path, tiny_tts):
    """`--device auto` is resolved through ctranslate2, which can see a GPU that a CPU torch cannot."""
    import torch

    from evalkit.adapters.torch_checkpoint import TorchCheckpointAdapter

    if torch.cuda.is_available():
        pytest.skip("this torch build has CUDA")
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"})
    described = TorchCheckpointAdapter(str(ckpt), "cuda").describe()
    assert described["device"] == "cpu" and described["device_requested"] == "cuda"


def test_claims_tell_checkpoints_from_archives(tmp_path, tiny_tts):
    import torch

    from evalkit.adapters.torch_checkpoint import TorchCheckpointAdapter
    from evalkit.adapters.torchscript import TorchScriptAdapter

    ckpt, archive, exported = tmp_path / "c.pt", tmp_path / "s.pt", tmp_path / "e.pt2"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"})
    tiny_tts.save_torchscript(archive)
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),)), str(exported))
    assert TorchCheckpointAdapter.claims(str(ckpt)) and not TorchScriptAdapter.claims(str(ckpt))
    assert TorchScriptAdapter.claims(str(archive)) and not TorchCheckpointAdapter.claims(str(archive))
    assert not TorchCheckpointAdapter.claims(str(tmp_path / "missing.pt"))
    assert not TorchCheckpointAdapter.claims(str(tmp_path))
    from evalkit.errors import EvalkitError

    # A torch.export archive is the torch-export adapter's (tests/test_adapter_export.py).
    assert not TorchScriptAdapter.claims(str(exported)) and not TorchCheckpointAdapter.claims(str(exported))
    with pytest.raises(EvalkitError, match=r"torch.export archive, not TorchScript: .*--adapter torch-export"):
        TorchScriptAdapter(str(exported))


BAD_CHECKPOINTS = {
    "missing_adapter": ("names adapter 'no-such-tts', which is not installed", "tiny-tts"),
    # A module path in an untrusted file is refused before anything is imported ...
    "missing_module": ("names adapter 'no_such_pkg.tts:Model'", "--adapter no_such_pkg.tts:Model",
                       "EVALKIT_TRUST_CHECKPOINTS=1"),
    # ... and imported once the sidecar opts in: then a missing module is what is reported.
    "missing_module_trusted": ("cannot import 'no_such_pkg.tts'", "no_such_pkg.tts:Model"),
    "no_key": ("does not name its evalkit adapter", "ckpt.pt.evalkit.yaml"),
    "custom_class": ("refused to unpickle the object tiny_tts.TrainerState", "EVALKIT_TRUST_CHECKPOINTS=1"),
    "random_bytes": ("not a readable PyTorch checkpoint", "UnpicklingError"),
    "truncated": ("not a readable PyTorch checkpoint",),
    "bad_sidecar": ("unknown key(s) adaptor", "allowed: adapter, config, step, trust"),
}


def write_bad(kind: str, ckpt: Path, tiny_tts) -> None:
    if kind == "missing_adapter":
        tiny_tts.save_checkpoint(ckpt, {"adapter": "no-such-tts"})
    elif kind in ("missing_module", "missing_module_trusted"):
        tiny_tts.save_checkpoint(ckpt, {"adapter": "no_such_pkg.tts:Model"})
        if kind == "missing_module_trusted":
            Path(str(ckpt) + ".evalkit.yaml").write_text("trust: true\n")
    elif kind == "no_key":
        tiny_tts.save_checkpoint(ckpt)
    elif kind == "custom_class":
        tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"}, trainer=tiny_tts.TrainerState(step=3))
    elif kind == "random_bytes":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts"})
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "bad_sidecar":
        tiny_tts.save_checkpoint(ckpt)
        Path(str(ckpt) + ".evalkit.yaml").write_text("adaptor: tiny-tts\n")


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_exits_2_with_one_line(tmp_path, capsys, tracking_uri, tiny_tts, kind):
    ckpt = tmp_path / "ckpt.pt"
    write_bad(kind, ckpt, tiny_tts)
    code, stderr, out = evaluate(capsys, tracking_uri, tmp_path, ckpt)
    assert code == 2, stderr
    line = one_line(stderr)
    assert all(part in line for part in BAD_CHECKPOINTS[kind]), line
    assert not (out / "summary.json").exists()


def test_archive_without_a_sample_rate_exits_2(tmp_path, capsys, tracking_uri, tiny_tts):
    archive = tmp_path / "model.ts"
    tiny_tts.save_torchscript(archive, "none")
    code, stderr, _ = evaluate(capsys, tracking_uri, tmp_path, archive)
    assert code == 2 and "no sample rate" in one_line(stderr) and "_extra_files" in stderr


@pytest.mark.slow
def test_corrupt_checkpoint_in_a_fresh_process(tmp_path, tiny_tts):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(np.random.default_rng(1).bytes(4096))
    proc = run_cli("run", "--suite", "en-base", str(ckpt), cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a readable PyTorch checkpoint" in one_line(proc.stderr)


def test_trusted_checkpoint_loads_its_pickled_objects(tmp_path, tiny_tts, monkeypatch):
    from evalkit.adapters.torch_checkpoint import TorchCheckpointAdapter

    ckpt = tmp_path / "ckpt.pt"
    write_bad("custom_class", ckpt, tiny_tts)
    monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    adapter = TorchCheckpointAdapter(str(ckpt))
    assert adapter.describe()["trusted_pickle"] == "true"
    monkeypatch.delenv("EVALKIT_TRUST_CHECKPOINTS")
    Path(str(ckpt) + ".evalkit.yaml").write_text("trust: true\n")  # the embedded name still applies
    described = TorchCheckpointAdapter(str(ckpt)).describe()
    assert described["trusted_pickle"] == "true" and described["adapter_source"] == "checkpoint"
    assert described["sidecar_sha256"] == sha256(Path(str(ckpt) + ".evalkit.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config, failure", [
    ({"fail_on": "Good morning!"}, "tiny-tts was configured to fail on 'Good morning!'"),
    ({"never_stop_s": 600}, "too long"),
])
def test_a_failing_utterance_is_recorded_not_fatal(tmp_path, capsys, tracking_uri, tiny_tts, config, failure):
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts", "config": config})
    code, stderr, out = evaluate(capsys, tracking_uri, tmp_path, ckpt)
    # One failed sentence of two: the run passes. Both failed: synthesis measured nothing (StageFailed, 4).
    assert code == (0 if "fail_on" in config else StageFailed.exit_code), stderr
    summary, rows = read_run(out)
    failed = [r for r in rows if r["failure"]]
    if "fail_on" in config:  # one bad sentence fails alone: the other is scored
        assert [r["id"] for r in failed] == ["en-base-002"]
        assert summary["aggregates"]["failures/count"] == 1
        assert rows[0]["failure"] is None and 1.0 <= rows[0]["dnsmos_ovrl"] <= 5.0
    else:  # 10 minutes for "Thank you.": a model that never stops is a failure, not a hang
        assert len(failed) == 2 and summary["aggregates"]["failures/count"] == 2
    assert all(failure in r["failure"] for r in failed), failed
