"""Hardening of the PyTorch checkpoint adapter, through the real CLI in a fresh process each time:
a checkpoint cannot make evalkit import a module it names unless it is trusted, every pickle
refusal says how to opt in, a state-dict mismatch is reported whole, and integer samples fail
their utterance instead of being scored clipped."""

from __future__ import annotations

import math
import os
import pickle
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_adapter_torch import one_line, read_run, sha256

OPT_IN = ("EVALKIT_TRUST_CHECKPOINTS=1", "trust: true")
ZEN = ("The Zen of Python", "Beautiful is better than ugly")
MARKER_MODULE = "evalkit_hardening_marker"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's runs: creating a sqlite store costs seconds, a run in it little."""
    return f"sqlite:///{tmp_path_factory.mktemp('hardening-torch') / 'mlflow.db'}"


@pytest.fixture
def modules(tmp_path, monkeypatch) -> Path:
    """A folder on the CLI's PYTHONPATH with a module that leaves a marker file when it is imported,
    and an adapter class (a TinyTTS subclass) that returns integer samples for one sentence."""
    folder = tmp_path / "pymods"
    folder.mkdir()
    marker = tmp_path / "imported.marker"
    (folder / f"{MARKER_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\nAdapter = object\n")
    (folder / "int_tts.py").write_text('''
import numpy as np
import torch
from tiny_tts import TinyTTS


class IntTTS(TinyTTS):
    """TinyTTS that returns integer PCM (config `int_as`) for the sentence in config `int_on`."""

    @classmethod
    def from_checkpoint(cls, state, config, device):
        adapter = super().from_checkpoint(state, config, device)
        adapter.int_on, adapter.int_as = config.get("int_on"), config.get("int_as")
        return adapter

    def synthesize_one(self, text, speaker, seed):
        wave = super().synthesize_one(text, speaker, seed)
        if text != self.int_on:
            return wave
        if self.int_as == "numpy-int16":
            return (wave.numpy() * 32767).astype(np.int16)
        return (wave.double() * (2 ** 31 - 1)).to(torch.int32)
''')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("EVALKIT_TRUST_CHECKPOINTS", raising=False)
    monkeypatch.delenv("EVALKIT_DEBUG", raising=False)
    return marker


def evalkit_run(store: str, tmp_path: Path, model: Path, *extra: str):
    out = tmp_path / "run"
    proc = run_cli("run", "--suite", "en-base", str(model), "--limit", "2", "--metrics", "dnsmos",
                   "--out", str(out), "--tracking-uri", store, *extra, cwd=tmp_path)
    return proc, out


# -- 1. a name inside an untrusted file imports nothing ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("source, ref", [
    ("checkpoint", "this:x"),  # importing `this` prints the Zen of Python
    ("checkpoint", "ctypes:cdll"),  # would dlopen on attribute access
    ("checkpoint", f"{MARKER_MODULE}:Adapter"),
    ("sidecar", f"{MARKER_MODULE}:Adapter"),  # a sidecar shipped beside a download is no more trusted
])
def test_untrusted_file_naming_a_module_is_refused_before_import(tmp_path, store, tiny_tts, modules, source, ref):
    ckpt = tmp_path / "ckpt.pt"
    if source == "checkpoint":
        tiny_tts.save_checkpoint(ckpt, {"adapter": ref})
    else:
        tiny_tts.save_checkpoint(ckpt)
        Path(str(ckpt) + ".evalkit.yaml").write_text(f"adapter: {ref}\n")
    proc, out = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert f"names adapter {ref!r} (in its {source}) by module path" in line, line
    # It says how to proceed: register an entry point, name it on the command line, or opt in.
    assert "entry point in group evalkit.adapters" in line and f"--adapter {ref}" in line, line
    assert all(hint in line for hint in OPT_IN), line
    assert not any(zen in proc.stdout + proc.stderr for zen in ZEN)
    assert not modules.exists(), "the named module was imported"
    assert not (out / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("opt_in", ["env", "sidecar"])
def test_trusted_file_may_name_a_module(tmp_path, store, tiny_tts, modules, monkeypatch, opt_in):
    """The control for the test above: the same name, once trusted, is imported (the marker is
    written), so the marker's absence there is the refusal's doing."""
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": f"{MARKER_MODULE}:Adapter"})
    if opt_in == "env":
        monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    else:
        Path(str(ckpt) + ".evalkit.yaml").write_text("trust: true\n")
    proc, _ = evalkit_run(store, tmp_path, ckpt)
    assert modules.read_text() == "imported"
    assert proc.returncode == 2  # `Adapter = object` cannot load a checkpoint, and says so
    assert "which has no from_checkpoint(state, config, device)" in one_line(proc.stderr)


@pytest.mark.slow
def test_trusted_checkpoint_naming_an_adapter_class_runs_end_to_end(tmp_path, store, tiny_tts, modules,
                                                                     monkeypatch):
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny_tts:TinyTTS"})
    monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    proc, out = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 0, proc.stderr
    summary, rows = read_run(out)
    model = summary["model"]
    assert model["user_adapter"] == "tiny_tts:TinyTTS" and model["adapter_source"] == "checkpoint"
    assert model["trusted_pickle"] == "true" and model["model_sha256"] == sha256(ckpt)
    assert summary["aggregates"]["failures/count"] == 0
    assert len(rows) == 2 and all(math.isfinite(r["dnsmos_ovrl"]) and 1.0 <= r["dnsmos_ovrl"] <= 5.0 for r in rows)


@pytest.mark.slow
def test_adapter_flag_replaces_a_module_named_inside_the_checkpoint(tmp_path, store, tiny_tts, modules):
    """`--adapter pkg.mod:Name` is the user's own choice: it is imported without trust, and the
    name inside the file is then never looked at."""
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": f"{MARKER_MODULE}:Adapter"})
    proc, out = evalkit_run(store, tmp_path, ckpt, "--adapter", "tiny_tts:TinyTTS")
    assert proc.returncode == 0, proc.stderr
    assert not modules.exists()
    summary, _ = read_run(out)
    assert summary["model"]["adapter_source"] == "--adapter" and summary["model"]["trusted_pickle"] == "false"
    assert summary["aggregates"]["failures/count"] == 0


# -- 2. every pickle refusal says how to opt in --------------------------------------------------

class Custom:
    """A plain class instance, as training scripts pickle into checkpoints."""

    def __init__(self) -> None:
        self.step = 3


class Payload:
    """Unpickling this calls `func(*args)`: what a hostile checkpoint does."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def legacy_tar(path: Path, state: dict) -> None:
    """The pre-0.4 torch.save format: a tar of `storages`, `tensors` and `pickle`."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("storages", pickle.dumps(0, 2) + pickle.dumps([], 2)),
                           ("tensors", pickle.dumps(0, 2)), ("pickle", pickle.dumps(state, 2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, BytesIO(data))


PICKLES = {  # kind: (what the refusal names, what it says to do instead)
    "custom_class": ("the object test_hardening_torch.Custom", "save plain data instead"),
    "dataclass": ("the object tiny_tts.TrainerState", "save plain data instead"),
    "whole_module": ("the object tiny_tts.model.TinyTTSModel", "model.state_dict()"),
    "numpy_array": ("(a numpy array or scalar)", "torch.from_numpy(a)"),
    "protocol_4": ("a protocol-4 pickle, which the weights-only loader cannot read", "default pickle protocol"),
    "legacy_tar": ("a checkpoint in the legacy .tar format", "re-save it with a current torch.save"),
    "builtin_call": ("the object print", "save plain data instead"),
    "blocked_module": ("the object os.makedirs", "save plain data instead"),  # torch blocks os/sys outright
}


def write_pickle(kind: str, ckpt: Path, side_effect: Path, tiny_tts) -> None:
    import torch

    named = {"adapter": "tiny-tts"}
    extra = {
        "custom_class": {"trainer": Custom()},
        "dataclass": {"trainer": tiny_tts.TrainerState(step=3)},
        "numpy_array": {"mel_stats": np.zeros(80, dtype=np.float32)},
        "builtin_call": {"payload": Payload(print, "PAYLOAD RAN")},
        "blocked_module": {"payload": Payload(os.makedirs, str(side_effect))},
    }
    if kind == "whole_module":  # torch.save(model): the nn.Module itself, pickled by class
        torch.save(tiny_tts.build_model(), ckpt)
    elif kind == "protocol_4":  # only tensors, but a pickle protocol the weights-only loader cannot read
        torch.save({"model": tiny_tts.build_model().state_dict(), "evalkit": named}, ckpt, pickle_protocol=4)
    elif kind == "legacy_tar":
        legacy_tar(ckpt, {"evalkit": named})
    else:
        tiny_tts.save_checkpoint(ckpt, named, **extra[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PICKLES))
def test_every_pickle_refusal_says_how_to_opt_in(tmp_path, store, tiny_tts, modules, kind):
    ckpt, side_effect = tmp_path / "ckpt.pt", tmp_path / "payload-ran"
    write_pickle(kind, ckpt, side_effect, tiny_tts)
    proc, out = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    what, instead = PICKLES[kind]
    assert f"refused to unpickle {what}" in line or (what in line and "refused to unpickle" in line), line
    assert instead in line, line
    assert all(hint in line for hint in OPT_IN) and f"{ckpt}.evalkit.yaml" in line, line
    # Refused before anything in the file ran.
    assert "PAYLOAD RAN" not in proc.stdout + proc.stderr and not side_effect.exists()
    assert not (out / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["protocol_4", "legacy_tar", "blocked_module"])
def test_opting_in_loads_what_was_refused(tmp_path, store, tiny_tts, modules, monkeypatch, kind):
    """The control for the refusals: each is a real pickle that opting in loads (and, for the
    hostile one, runs: the refusal above is what kept its side effect from happening)."""
    ckpt, side_effect = tmp_path / "ckpt.pt", tmp_path / "payload-ran"
    write_pickle(kind, ckpt, side_effect, tiny_tts)
    monkeypatch.setenv("EVALKIT_TRUST_CHECKPOINTS", "1")
    proc, out = evalkit_run(store, tmp_path, ckpt)
    assert "refused to unpickle" not in proc.stderr
    assert side_effect.is_dir() == (kind == "blocked_module")
    if kind == "legacy_tar":  # loaded: what it holds (no "model") is what the adapter then reports
        assert proc.returncode == 2 and "from_checkpoint failed (KeyError: 'model')" in one_line(proc.stderr)
    else:
        assert proc.returncode == 0, proc.stderr
        assert read_run(out)[0]["model"]["trusted_pickle"] == "true"


# -- 3. a state-dict mismatch is reported whole --------------------------------------------------

def mismatched(tiny_tts, ckpt: Path, kind: str) -> None:
    import torch

    state = tiny_tts.build_model().state_dict()
    config = {}
    if kind == "keys":
        state["extra.weight"] = state.pop("proj.bias")
    else:  # weights of a dim-16 model, config of a dim-8 one
        config = {"model": {"dim": 8}}
    torch.save({"model": state, "evalkit": {"adapter": "tiny-tts", "config": config}}, ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("kind, expected", [
    ("keys", ['Missing key(s) in state_dict: "proj.bias"', 'Unexpected key(s) in state_dict: "extra.weight"']),
    ("shapes", ["size mismatch for embed.weight", "torch.Size([256, 16])", "torch.Size([256, 8])"]),
])
def test_state_dict_mismatch_is_reported_whole_on_one_line(tmp_path, store, tiny_tts, modules, kind, expected):
    ckpt = tmp_path / "ckpt.pt"
    mismatched(tiny_tts, ckpt, kind)
    proc, _ = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert "tiny_tts:TinyTTS.from_checkpoint failed (RuntimeError: Error(s) in loading state_dict for TinyTTSModel:" \
        in line, line
    assert all(part in line for part in expected), line
    assert "\t" not in line and "  " not in line, line


@pytest.mark.slow
def test_state_dict_mismatch_keeps_its_cause_for_debugging(tmp_path, store, tiny_tts, modules, monkeypatch):
    """EVALKIT_DEBUG=1 prints the chain: the one-line error is raised from torch's own."""
    ckpt = tmp_path / "ckpt.pt"
    mismatched(tiny_tts, ckpt, "keys")
    monkeypatch.setenv("EVALKIT_DEBUG", "1")
    proc, _ = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 2, proc.stderr
    assert "RuntimeError: Error(s) in loading state_dict for TinyTTSModel:" in proc.stderr
    assert "load_state_dict" in proc.stderr  # torch's frame, in the cause's traceback
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


# -- 4. integer samples fail their utterance -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("int_as, dtype, scale", [
    ("numpy-int16", "int16", "x / 32768"),
    ("torch-int32", "int32", "x / 2147483648"),
])
def test_integer_samples_fail_their_utterance(tmp_path, store, tiny_tts, modules, int_as, dtype, scale):
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt, {"adapter": "tiny-tts", "config": {"int_on": "Good morning!", "int_as": int_as}})
    proc, out = evalkit_run(store, tmp_path, ckpt, "--adapter", "int_tts:IntTTS")
    assert proc.returncode == 0, proc.stderr  # one sentence of two failed: the run goes on
    summary, rows = read_run(out)
    by_id = {r["id"]: r for r in rows}
    failure = by_id["en-base-002"]["failure"]
    assert failure and f"returned {dtype} samples" in failure and "float32 in [-1, 1]" in failure, failure
    assert scale in failure, failure
    assert by_id["en-base-001"]["failure"] is None and 1.0 <= by_id["en-base-001"]["dnsmos_ovrl"] <= 5.0
    assert summary["aggregates"]["failures/count"] == 1
    assert sorted(p.name for p in (out / "audio").glob("*.wav")) == ["en-base-001.wav"]


# -- the sidecar is input from others too ---------------------------------------------------------

def test_sidecar_alias_bomb_is_refused_in_one_line(tmp_path, store, tiny_tts, modules):
    """A billion-laughs `config:` (10**9 nodes once expanded) would blow up when the config is
    recorded; the sidecar is read with the same bounds as a suite header."""
    ckpt = tmp_path / "ckpt.pt"
    tiny_tts.save_checkpoint(ckpt)
    levels = ["  l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    Path(f"{ckpt}.evalkit.yaml").write_text("adapter: tiny-tts\nconfig:\n" + "\n".join(levels) + "\n")
    proc, out = evalkit_run(store, tmp_path, ckpt)
    assert proc.returncode == 2, proc.stderr
    assert "aliases expand to more than" in one_line(proc.stderr)
    assert not (out / "summary.json").exists()
