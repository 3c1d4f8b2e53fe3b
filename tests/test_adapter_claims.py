"""Which adapter a MODEL goes to without --adapter: each spec to its own adapter, whatever it ends with."""

from __future__ import annotations

import pytest

from evalkit.adapters import resolve
from evalkit.adapters.piper import PiperAdapter

# The entry points pyproject.toml registers for the two new adapters. Until the installed
# evalkit-tts carries them (pip install -e . after they are added there), a stand-in
# distribution under tmp declares them for these tests, never in the venv.
NEW_ADAPTERS = {
    "hf": "evalkit.adapters.transformers_tts:TransformersTTSAdapter [hf]",
    "torch-export": "evalkit.adapters.torch_export:TorchExportAdapter [torch]",
}


@pytest.fixture(scope="module")
def new_adapters(tmp_path_factory):
    from evalkit import plugins

    missing = {n: v for n, v in NEW_ADAPTERS.items() if n not in plugins.registered(plugins.ADAPTERS)}
    if not missing:
        yield
        return
    site = tmp_path_factory.mktemp("adapter-entry-points")
    info = site / "evalkit_new_adapters-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: evalkit-new-adapters\nVersion: 0.0.0\n"
        "Provides-Extra: hf\nRequires-Dist: transformers>=5; extra == \"hf\"\n"
        "Provides-Extra: torch\nRequires-Dist: torch>=2.1; extra == \"torch\"\n")
    (info / "entry_points.txt").write_text("[evalkit.adapters]\n" + "".join(f"{n} = {v}\n" for n, v in missing.items()))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        yield


@pytest.mark.parametrize("model, piper", [
    ("piper:joe", True),
    ("voices/ko.onnx", True),
    ("/abs/path/voice.onnx", True),
    ("runs/a:b.onnx", True),  # a colon inside a path is not a scheme
    ("cmd:synth --voice voice.onnx", False),
    ("http://127.0.0.1:9/v1/voice.onnx", False),
    ("wavdir:exported.onnx", False),
    ("model.pt", False),
])
def test_piper_claims_only_its_own_models(model, piper):
    assert PiperAdapter.claims(model) is piper


def test_a_command_ending_in_onnx_goes_to_the_command_adapter():
    adapter = resolve("cmd:true {text} {out} voice.onnx")
    try:
        assert adapter.name == "cmd"
    finally:
        adapter.close()


# --- hf (transformers) and torch-export: their own specs, and nobody else's --------------------


@pytest.mark.parametrize("model, hf", [
    ("hf:facebook/mms-tts-kor", True),
    ("hf:facebook/mms-tts-kor@main", True),
    ("hf:org/name@0123456789abcdef0123456789abcdef01234567", True),
    ("piper:joe", False),
    ("espeak:ko", False),
    ("cmd:synth --model hf:facebook/mms-tts-kor {text} {out}", False),
    ("http://127.0.0.1:9/v1?model=hf:facebook/mms-tts-kor", False),
    ("wavdir:hf-exports", False),
    ("voices/ko.onnx", False),
    ("model.pt2", False),
])
def test_hf_claims_only_its_own_specs(model, hf):
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter

    assert TransformersTTSAdapter.claims(model) is hf


def _folder(tmp_path, name: str, config: dict | None = None, wav: bool = False):
    import json

    folder = tmp_path / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if wav:
        (folder / "ko-base-001.wav").write_bytes(b"RIFF")
    return folder


def test_hf_claims_transformers_folders_but_not_wav_folders(tmp_path):
    from evalkit.adapters.transformers_tts import TransformersTTSAdapter
    from evalkit.adapters.wavdir import WavDirAdapter

    vits = _folder(tmp_path, "vits", {"model_type": "vits"})
    bert = _folder(tmp_path, "bert", {"model_type": "bert"})  # claimed, to be refused in one clear line
    exported_wavs = _folder(tmp_path, "wavs", {"model_type": "vits"}, wav=True)  # clips beside a config: wavdir's
    ct2 = _folder(tmp_path, "ct2", {"alignment_heads": [[1, 2]]})  # a CTranslate2 Whisper folder: no model_type
    plain = _folder(tmp_path, "plain")
    assert TransformersTTSAdapter.claims(str(vits)) and TransformersTTSAdapter.claims(str(bert))
    assert not any(TransformersTTSAdapter.claims(str(f)) for f in (exported_wavs, ct2, plain, tmp_path / "missing"))
    assert WavDirAdapter.claims(str(exported_wavs)) and not WavDirAdapter.claims(str(vits))


def test_resolution_order_with_the_new_adapters(tmp_path, new_adapters):
    from evalkit import adapters

    names = [n for n, _, _ in adapters.ordered(unmet_too=True)]
    assert names.index("torch") < names.index("torchscript") < names.index("torch-export") < names.index("hf") \
        < names.index("piper") < names.index("espeak") < names.index("wavdir")
    folder = _folder(tmp_path, "wavs", {"model_type": "vits"}, wav=True)
    adapter = resolve(str(folder))
    try:
        assert adapter.name == "wavdir"
    finally:
        adapter.close()
    adapter = resolve("cmd:true {text} {out} hf:facebook/mms-tts-kor")
    try:
        assert adapter.name == "cmd"
    finally:
        adapter.close()


@pytest.mark.parametrize("model", ["piper:joe", "cmd:synth {text} {out} m.pt2", "http://127.0.0.1:9/m.pt2",
                                   "wavdir:m.pt2", "hf:org/m.pt2"])
def test_torch_export_claims_only_export_archives(model):
    from evalkit.adapters.torch_export import TorchExportAdapter

    assert not TorchExportAdapter.claims(model)
