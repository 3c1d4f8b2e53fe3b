"""The cmd: adapter running real programs: espeak-ng, and a small Python TTS stand-in whose
behaviour (sleep, fail, write nothing) is chosen by the text it is given."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evalkit import pipeline
from evalkit.adapters.command import CommandAdapter
from evalkit.errors import EvalkitError
from evalkit.types import Suite, SynthesisRequest, Utterance

ESPEAK = "cmd:espeak-ng -v en-us -w {out} {text}"

# Writes 0.2 s of tone to {out} and its argv + stdin beside it, unless the text asks otherwise.
STAND_IN = r'''
import json, math, os, struct, subprocess, sys, time, wave
log_dir, text, out, uid = sys.argv[1:5]
stdin = sys.stdin.read()
with open(os.path.join(log_dir, uid + ".json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "stdin": stdin}, f)
if text == "sleep":  # a grandchild that sleeps 30 s, then leaves a marker: only a kill stops it writing
    marker = os.path.join(log_dir, uid + ".woke")
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(30); open(sys.argv[1], 'w')",
                              marker])
    open(os.path.join(log_dir, uid + ".pid"), "w").write(str(child.pid))
    child.wait()
if text == "fail":
    print("loading voice", file=sys.stderr)
    print("boom: no phonemes for this input", file=sys.stderr)
    sys.exit(1)
if text == "nofile":
    sys.exit(0)
if text == "garbage":
    open(out, "wb").write(b"not a wav at all")
    sys.exit(0)
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(3200)))
'''


def req(text: str, uid: str = "u1") -> SynthesisRequest:
    return SynthesisRequest(uid, text, "en")


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "tts.py"
    script.write_text(STAND_IN)
    logs = tmp_path / "logs"
    logs.mkdir()
    adapter = CommandAdapter(f"cmd:{sys.executable} {script} {logs} {{text}} {{out}} {{id}}")
    yield adapter, logs, script
    adapter.close()


def test_espeak_through_cmd_matches_espeak_adapter(espeak_en):
    adapter = CommandAdapter(ESPEAK)
    try:
        clip = adapter.synthesize([req("Good morning, everyone.")])[0]
        info = adapter.describe()
    finally:
        adapter.close()
    direct = espeak_en.synthesize([req("Good morning, everyone.")])[0]
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.sample_rate == direct.sample_rate == 22050
    assert clip.duration > 0.5 and np.abs(clip.samples).max() > 0.05
    np.testing.assert_allclose(clip.samples, direct.samples, atol=1e-4)
    assert info["model"] == ESPEAK and info["sample_rate"] == "22050"
    assert info["executable"].endswith("espeak-ng") and len(info["model_sha256"]) == 64


def test_hostile_text_is_one_argument_and_runs_nothing(tmp_path, stand_in):
    victim = tmp_path / "x"
    victim.mkdir()
    pwned = tmp_path / "pwned"
    text = (f"Hi; rm -rf {victim} $(touch {pwned}) `touch {pwned}` && touch {pwned} "
            f"| cat > {pwned} \"double\" 'single' {{out}} {{text}} \\")
    adapter, logs, _ = stand_in
    adapter.synthesize([req(text, "u1")])
    seen = json.loads((logs / "u1.json").read_text())
    assert seen["argv"][1] == text and len(seen["argv"]) == 4  # one element, placeholders in it untouched
    assert seen["stdin"] == text
    espeak = CommandAdapter(ESPEAK)
    try:
        clip = espeak.synthesize([req(text)])[0]
    finally:
        espeak.close()
    assert clip.duration > 4  # the whole string was spoken, punctuation and all
    assert victim.is_dir() and not pwned.exists()


def test_text_that_looks_like_an_option_is_refused_unless_after_double_dash(tmp_path):
    evil = tmp_path / "evil.wav"
    plain = CommandAdapter(ESPEAK)
    guarded = CommandAdapter("cmd:espeak-ng -v en-us -w {out} -- {text}")
    try:
        with pytest.raises(ValueError, match="read as an option"):
            plain.synthesize([req(f"-w{evil}")])
        assert guarded.synthesize([req(f"-w{evil}")])[0].duration > 0.5
    finally:
        plain.close()
        guarded.close()
    assert not evil.exists()


def test_timeout_fails_only_that_sentence_and_kills_the_process_group(tmp_path, stand_in, monkeypatch):
    monkeypatch.setenv("EVALKIT_CMD_TIMEOUT", "1")
    _, logs, script = stand_in
    adapter = CommandAdapter(f"cmd:{sys.executable} {script} {logs} {{text}} {{out}} {{id}}")
    suite = Suite("t", "1", "en", "test", (Utterance("a", "first"), Utterance("b", "sleep"), Utterance("c", "third")),
                  "d", "mem")
    rows = {r.utterance_id: r for r in pipeline.evaluate(suite, adapter, None, [], tmp_path / "run").rows}
    assert "took over 1 s" in rows["b"].failure
    assert rows["a"].failure is None and rows["c"].failure is None
    assert rows["a"].values["duration_s"] == pytest.approx(0.2)
    assert adapter.describe()["timeout_s"] == "1"
    pid = int((logs / "b.pid").read_text())
    for _ in range(50):  # the orphaned grandchild is killed too (gone, or a zombie awaiting init)
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")
    # ... before its sleep ended: it never wrote its marker (and, dead, never will), so the run did not
    # wait out the 30 s either (the grandchild holds the helper's stderr: nothing returns before it dies).
    assert not (logs / "b.woke").exists()
    adapter.close()


def test_exit_status_missing_and_bad_output_fail_with_stderr(stand_in):
    adapter, _, _ = stand_in
    with pytest.raises(RuntimeError, match=r"exited 1: loading voice \| boom: no phonemes"):
        adapter.synthesize([req("fail")])
    with pytest.raises(RuntimeError, match="wrote no"):
        adapter.synthesize([req("nofile")])
    with pytest.raises(RuntimeError, match="unreadable wav"):
        adapter.synthesize([req("garbage")])
    assert adapter.synthesize([req("fine")])[0].sample_rate == 16000


def test_digest_covers_template_executable_and_script(stand_in):
    adapter, logs, script = stand_in
    before = adapter.describe()["model_sha256"]
    assert CommandAdapter(adapter.model).describe()["model_sha256"] == before
    script.write_text(STAND_IN + "\n# retrained\n")
    assert adapter.describe()["model_sha256"] != before
    espeak = CommandAdapter(ESPEAK)
    faster = CommandAdapter(ESPEAK.replace("-v en-us", "-v en-us -s 220"))
    assert espeak.describe()["model_sha256"] != faster.describe()["model_sha256"]
    espeak.close()
    faster.close()


@pytest.mark.parametrize("model, message", [
    ("cmd:no-such-tts-binary -w {out} {text}", "executable not found"),
    ("cmd:", "empty command"),
    ("cmd:espeak-ng -w {out} 'unbalanced", "cannot parse"),
    ("cmd:espeak-ng {text}", "no {out}"),
    ("cmd:espeak-ng -w {out} {txet}", "unknown placeholder {txet}"),
    ("cmd:{text} {out}", "cannot be a placeholder"),
])
def test_bad_templates_are_usage_errors(model, message):
    with pytest.raises(EvalkitError, match=message.replace("{", r"\{").replace("}", r"\}")):
        CommandAdapter(model)


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_bad_timeout_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv("EVALKIT_CMD_TIMEOUT", value)
    with pytest.raises(EvalkitError, match="EVALKIT_CMD_TIMEOUT"):
        CommandAdapter(ESPEAK)


def test_claims_and_resolution():
    from evalkit.adapters import resolve

    assert CommandAdapter.claims(ESPEAK)
    assert not CommandAdapter.claims("espeak:en-us") and not CommandAdapter.claims("voice.onnx")
    # Among all installed adapters, in their resolution order, a cmd: template goes to this one, even
    # when it runs espeak-ng or names a URL (the espeak adapter is asked before it, the http one after).
    for model in (ESPEAK, "cmd:espeak-ng -w {out} http://127.0.0.1:9/v1 {text}"):
        adapter = resolve(model)
        try:
            assert type(adapter) is CommandAdapter and adapter.template == model[len("cmd:"):]
        finally:
            adapter.close()
