"""Which adapter a MODEL goes to without --adapter: each spec to its own adapter, whatever it ends with."""

from __future__ import annotations

import pytest

from evalkit.adapters import resolve
from evalkit.adapters.piper import PiperAdapter


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
