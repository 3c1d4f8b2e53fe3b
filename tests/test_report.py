"""Regression reports end to end on real parts: Piper audio (clean, and with noise at 0 dB SNR),
Whisper base, DNSMOS, a real MLflow sqlite store, and the HTML opened in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from evalkit.adapters.piper import PiperAdapter
from evalkit.errors import EvalkitError
from evalkit.types import Audio

SUITE_IDS = ("en-base-014", "en-base-016", "en-base-028", "en-base-029", "en-base-043")
# Gates in the suite header, as a team would keep them; the other keys are report-only.
GATES = "gates:\n  cer: {max_abs: 0.02, max_rel: 0.5}\n  dnsmos_ovrl: {max_abs: 0.3}\n  default: none\n"


class NoisyPiper(PiperAdapter):
    """The same voice, made worse on purpose: white noise at 0 dB SNR, seeded per utterance."""

    def synthesize(self, requests):
        out = []
        for req, clip in zip(requests, super().synthesize(requests), strict=True):
            seed = int.from_bytes(hashlib.sha256(req.utterance_id.encode()).digest()[:4], "little")
            x = clip.samples.astype(np.float64)
            noisy = x + np.random.default_rng(seed).standard_normal(x.size) * np.sqrt(np.mean(x ** 2))
            out.append(Audio((noisy / max(1.0, np.abs(noisy).max())).astype(np.float32), clip.sample_rate))
        return out


def evalkit(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (the session's Whisper is reused), as `evalkit` once cli.py registers
    the comparison commands, and through register() on a bare app until then."""
    import click
    import typer

    from evalkit import cli
    from evalkit.cli_compare import register

    wired = any(c.name == "compare" for c in cli.app.registered_commands)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            if args[0] == "run" or wired:
                old, sys.argv = sys.argv, ["evalkit", *args]
                try:
                    cli.main()
                finally:
                    sys.argv = old
            else:
                app = typer.Typer(pretty_exceptions_enable=False)
                register(app)
                app(args=list(args), prog_name="evalkit", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        except EvalkitError as exc:  # what cli.main does
            print(f"error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except click.exceptions.ClickException as exc:
            exc.show()
            code = exc.exit_code
    return code, out.getvalue(), err.getvalue()


def write_suite(folder: Path, edit: bool = False) -> Path:
    from evalkit import suite as suite_mod

    source = suite_mod.resolve("en-base")
    rows = [json.loads(line) for line in (source / "utterances.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["id"] in SUITE_IDS]
    if edit:  # one changed sentence: another suite digest
        rows[0]["text"] = "Where are my glasses? she asked, patting every pocket."
    folder.mkdir()
    (folder / "suite.yaml").write_text("name: en-five\nversion: 1\nlanguage: en\ndescription: five plain "
                                       "en-base sentences\nutterances: u.jsonl\n" + GATES)
    (folder / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, asr):
    root = tmp_path_factory.mktemp("report-e2e")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    suite, edited = write_suite(root / "suite"), write_suite(root / "suite-edited", edit=True)
    made = {"root": root, "uri": uri}
    both = ("--experiment", "nightly-test", "--metrics", "intelligibility,dnsmos")
    for name, suite_dir, extra in (("baseline", suite, both),
                                   ("noisy", suite, (*both, "--adapter", f"{__name__}:NoisyPiper")),
                                   ("same", suite, both),
                                   ("other", edited, ("--experiment", "other", "--metrics", "intelligibility"))):
        code, out, err = evalkit("run", "--suite", str(suite_dir), "piper:joe", "--out", str(root / name),
                                 "--tracking-uri", uri, *extra)
        assert code == 0, err
        made[name] = root / name
        made[f"{name}_id"] = json.loads((root / name / "summary.json").read_text())["tracking"]["run_id"]
    return SimpleNamespace(**made)


def rows(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "utterances.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_degraded_candidate_regresses(runs, tmp_path):
    code, out, err = evalkit("compare", str(runs.baseline), str(runs.noisy))
    assert code == 0, err
    assert re.search(r"cer ↓.*worse", out) and re.search(r"dnsmos_ovrl ↑.*worse", out)
    # Then per suite tag (statement, question, quotation, long, list), each interval Bonferroni-corrected.
    assert "Per-tag intervals are Bonferroni-corrected across the 5 tags" in out and re.search(r"statement\s+5\s", out)

    report = tmp_path / "report"
    # No --worst-by: the first headline the candidate's metrics declare, intelligibility's cer
    # (--metrics names it first).
    code, out, err = evalkit("report", "--candidate", str(runs.noisy), "--baseline", str(runs.baseline),
                             "--out", str(report), "--fail-on-regression")
    assert code == 1, err
    assert "verdict: regressed" in out and "Traceback" not in err
    md = (report / "summary.md").read_text(encoding="utf-8")
    print(f"\n{md}")
    assert md.startswith("## evalkit: ❌ regressed") and "suite.yaml gates" in md
    assert "### By tag" in md and "1-0.05/5 interval (99%)" in md

    # The worst utterances, in order of their CER increase, in both the Markdown and the HTML.
    cand, base = rows(runs.noisy), rows(runs.baseline)
    deltas = sorted(((cand[u]["cer"] - base[u]["cer"], u) for u in SUITE_IDS), reverse=True)
    worst = [u for d, u in deltas if d > 0]
    assert len(worst) >= 3
    listed = re.findall(r"^\| (en-base-\d+) \|", md.split("### Worst-regressed")[1], flags=re.M)
    assert listed == worst
    page = (report / "index.html").read_text(encoding="utf-8")
    assert all(f"<h3>{u} " in page for u in worst)
    assert html_escaped(cand[worst[0]]["transcript"]) in page

    verdict = json.loads((report / "comparison.json").read_text())
    assert verdict["verdict"] == "regressed"
    assert {m["key"] for m in verdict["metrics"] if m["status"] == "regressed"} == {"cer", "dnsmos_ovrl"}

    client = MlflowClient(tracking_uri=runs.uri)
    tags = client.get_run(runs.noisy_id).data.tags
    assert tags["evalkit.verdict"] == "regressed" and tags["evalkit.baseline_run_id"] == runs.baseline_id
    logged = {a.path for a in client.list_artifacts(runs.noisy_id, "report")}
    assert {"report/index.html", "report/summary.md", "report/comparison.json", "report/audio"} <= logged

    # The same verdict without --fail-on-regression exits 0; gates that tolerate it pass.
    code, _, err = evalkit("report", "--candidate", str(runs.noisy), "--baseline", str(runs.baseline),
                           "--out", str(tmp_path / "again"))
    assert code == 0, err
    loose = tmp_path / "loose.toml"
    loose.write_text('[gates]\ncer = { max_abs = 0.5 }\ndnsmos_ovrl = { max_rel = 0.9 }\ndefault = "none"\n')
    code, out, err = evalkit("report", "--candidate", str(runs.noisy), "--baseline", str(runs.baseline),
                             "--gates", str(loose), "--out", str(tmp_path / "loose"), "--fail-on-regression")
    assert code == 0 and "verdict: pass" in out, err


def html_escaped(s: str) -> str:
    """As Jinja2's autoescape writes it (markupsafe: ' as &#39;, " as &#34;)."""
    from markupsafe import escape

    return str(escape(s))


@pytest.mark.slow
def test_same_model_twice_passes(runs, tmp_path):
    code, out, err = evalkit("compare", str(runs.baseline), str(runs.same))
    assert code == 0, err
    assert "worse" not in out and "better" not in out
    code, out, err = evalkit("report", "--candidate", str(runs.same), "--baseline", str(runs.baseline),
                             "--out", str(tmp_path / "r"), "--fail-on-regression")
    assert code == 0, err
    assert (tmp_path / "r" / "summary.md").read_text().startswith("## evalkit: ✅ pass")
    assert MlflowClient(tracking_uri=runs.uri).get_run(runs.same_id).data.tags["evalkit.verdict"] == "pass"


@pytest.mark.slow
def test_different_suite_is_incomparable(runs, tmp_path):
    code, out, err = evalkit("compare", str(runs.baseline), str(runs.other))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: incomparable: suite digests differ")
    code, out, err = evalkit("compare", str(runs.baseline), str(runs.other), "--force")
    assert code == 0 and "not comparable, forced: suite digests differ" in err
    code, out, err = evalkit("report", "--candidate", str(runs.other), "--baseline", str(runs.baseline),
                             "--out", str(tmp_path / "r"), "--fail-on-regression")
    assert code == 2 and "incomparable" in err
    assert "suite digests differ" in (tmp_path / "r" / "index.html").read_text()
    assert MlflowClient(tracking_uri=runs.uri).get_run(runs.other_id).data.tags["evalkit.verdict"] == "incomparable"


@pytest.mark.slow
def test_named_baseline_latest_and_mlflow_ids(runs, tmp_path):
    code, out, err = evalkit("baseline", "set", str(runs.baseline), "--name", "nightly")
    assert code == 0 and runs.baseline_id in out, err
    code, out, _ = evalkit("baseline", "show", "nightly", "--tracking-uri", runs.uri)
    assert out.strip() == runs.baseline_id
    code, out, err = evalkit("report", "--candidate", str(runs.same), "--baseline", "tag:nightly",
                             "--out", str(tmp_path / "tagged"), "--fail-on-regression")
    assert code == 0, err
    tagged = json.loads((tmp_path / "tagged" / "comparison.json").read_text())
    assert tagged["baseline"]["mlflow_run_id"] == runs.baseline_id

    # Moving the name takes it off the old run.
    code, out, err = evalkit("baseline", "set", runs.noisy_id, "--name", "nightly", "--tracking-uri", runs.uri)
    assert code == 0 and f"was {runs.baseline_id}" in out, err
    client = MlflowClient(tracking_uri=runs.uri)
    assert "evalkit.baseline.nightly" not in client.get_run(runs.baseline_id).data.tags

    # latest: is the newest finished run of the experiment other than the candidate.
    code, out, err = evalkit("report", "--candidate", str(runs.same), "--baseline", "latest:nightly-test",
                             "--out", str(tmp_path / "latest"))
    assert code == 0, err
    assert client.get_run(runs.same_id).data.tags["evalkit.baseline_run_id"] == runs.noisy_id

    # Runs named by MLflow id are fetched from the store (artifacts into the evalkit cache).
    code, out, err = evalkit("compare", runs.baseline_id, runs.noisy_id, "--tracking-uri", runs.uri)
    assert code == 0 and re.search(r"cer ↓.*worse", out), err
    code, out, err = evalkit("report", "--candidate", runs.noisy_id, "--baseline", runs.baseline_id,
                             "--tracking-uri", runs.uri, "--out", str(tmp_path / "by-id"))
    assert code == 0 and "verdict: regressed" in out, err
    by_id = (tmp_path / "by-id" / "index.html").read_text()
    played = re.findall(r'<audio controls preload="metadata" src="([^"]+)"', by_id)
    assert played and all((tmp_path / "by-id" / src).is_file() for src in played)  # audio came from MLflow

    local = tmp_path / "local-only"
    shutil.copytree(runs.baseline, local)
    summary = json.loads((local / "summary.json").read_text())
    summary["tracking"]["run_id"] = None
    (local / "summary.json").write_text(json.dumps(summary))
    code, _, err = evalkit("baseline", "set", str(local), "--name", "nightly")
    assert code == 2 and "never logged to MLflow" in err


def test_report_escapes_text_and_keeps_korean(tmp_path):
    """No model needed: hostile and Korean text in made-up runs, a report folder that is not ours."""
    import soundfile

    from evalkit import compare, gates, report
    from evalkit.record import ReferenceInfo, RunRecord
    from evalkit.references import References
    from evalkit.runs import LoadedRun
    from evalkit.types import Row

    def run(cer: float, transcript: str, folder: Path) -> LoadedRun:
        (folder / "audio").mkdir(parents=True)
        soundfile.write(folder / "audio" / "ko-1.wav", np.zeros(1600, dtype=np.float32), 16000)
        row = {"id": "ko-1", "text": "<script>alert(1)</script> 안녕하세요 | *별*", "transcript": transcript,
               "cer_alignment": "안녕[하→허]세요", "cer": cer, "audio": "audio/ko-1.wav", "failure": None}
        summary = {"run_id": folder.name * 8, "params": {"model": "m"}, "tags": {},
                   "suite": {"name": "ko-x", "digest": "d", "language": "ko", "version": "1"},
                   "metrics": {"intelligibility": {"version": "2", "higher_is_better": {"cer": False},
                                                   "alignments": ["cer_alignment"], "headline": "cer"}},
                   "aggregates": {"cer/mean": cer}}
        return LoadedRun(RunRecord.from_json(summary), [Row.from_json(row)], folder / "audio", None, f"folder:{folder}")

    cand, base = run(0.2, "안녕허세요 <b>", tmp_path / "cand"), run(0.0, "안녕하세요", tmp_path / "base")
    (tmp_path / "refs").mkdir()  # a --reference-run folder: its clip is played as the reference
    soundfile.write(tmp_path / "refs" / "ko-1.wav", np.zeros(800, dtype=np.float32), 16000)
    # ... because it is what the run was scored against: the digest the run recorded.
    digest = References("folder", "", {"ko-1": tmp_path / "refs" / "ko-1.wav"}).digest
    cand = dataclasses.replace(cand, summary=dataclasses.replace(
        cand.summary, reference=ReferenceInfo("folder", str(tmp_path / "refs"), digest)))
    result = compare.compare(cand, base)
    verdict = gates.judge(result, gates.BUILTIN)
    out = tmp_path / "report"
    report.write(out, cand, base, result, verdict)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and '<html lang="ko">' in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; 안녕하세요" in page
    assert "안녕허세요 &lt;b&gt;" in page and '<span class="sub" title="substituted">하→허</span>' in page
    for kind in ("candidate", "baseline", "reference"):
        assert f'src="audio/{kind}/ko-1.wav"' in page and (out / "audio" / kind / "ko-1.wav").is_file()
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert r"\<script\>alert(1)\</script\> 안녕하세요 \| \*별\*" in md
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EvalkitError, match="holds other files"):
        report.write(out, cand, base, result, verdict)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(runs, tmp_path):
    report = tmp_path / "report"
    code, _, err = evalkit("report", "--candidate", str(runs.noisy), "--baseline", str(runs.baseline),
                           "--out", str(report))
    assert code == 0, err
    page = (report / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith(("audio/", "data:image/svg+xml;base64,")) for link in links)
    assert "<script" not in page and "http://" not in page and "https://" not in page

    shot = tmp_path / "report.png"
    seen = open_in_chromium(report / "index.html", shot)
    print(f"\nscreenshot: {shot}")
    assert seen["problems"] == [], seen["problems"]
    assert seen["audio"], "no audio players"
    for src, ready, error in seen["audio"]:
        path = (report / src).resolve()
        assert path.is_relative_to(report.resolve()) and path.is_file(), src
        assert ready >= 1 and error is None, (src, ready, error)  # the browser read its header
    assert len(seen["audio"]) == 2 * seen["utterances"]  # candidate and baseline for each listed utterance
    assert seen["plots"] >= 2 and seen["plots"] == seen["plots_loaded"]
    assert seen["title"].startswith("evalkit report: regressed")
    assert shot.stat().st_size > 20_000


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                  "--remote-debugging-pipe", "--window-size=1280,2000")
PROBE = """JSON.stringify({
  audio: [...document.querySelectorAll('audio')].flatMap(a =>
    [a, ...a.querySelectorAll('source')].filter(e => e.getAttribute('src'))
      .map(e => [e.getAttribute('src'), a.readyState, a.error && a.error.code])),
  utterances: document.querySelectorAll('section.utt').length,
  plots: document.querySelectorAll('img.plot, svg').length,
  plots_loaded: [...document.querySelectorAll('img.plot')].filter(i => i.complete && i.naturalWidth > 0).length
                + document.querySelectorAll('svg').length,
  title: document.title})"""
WAIT_FOR_MEDIA = """Promise.all([...document.querySelectorAll('audio')].map(a =>
  a.readyState >= 1 || a.error ? 0
    : new Promise(r => { a.onloadedmetadata = a.onerror = r; setTimeout(r, 10000); })))"""


def open_in_chromium(index: Path, screenshot: Path, timeout: float = 60.0) -> dict:
    """Opens the page through the DevTools protocol over a pipe (no extra packages): console
    errors, uncaught exceptions and failed loads, the audio elements' state, a full-page PNG."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.fail("headless Chromium is missing: apt-get install -y chromium fonts-nanum")
    to_browser, from_browser = os.pipe(), os.pipe()

    def plumb():  # the protocol pipe is fd 3 (commands in) and fd 4 (answers out)
        os.dup2(to_browser[0], 3)
        os.dup2(from_browser[1], 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    profile = index.parent.parent / "chromium-profile"
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], preexec_fn=plumb,
                            close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_browser[0])
    os.close(from_browser[1])
    deadline, state = time.monotonic() + timeout, {"buf": b"", "id": 0, "events": []}

    def read() -> dict:
        while b"\0" not in state["buf"]:
            ready, _, _ = select.select([from_browser[0]], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(from_browser[0], 1 << 20) if ready else b""
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe or timed out")
            state["buf"] += chunk
        message, _, state["buf"] = state["buf"].partition(b"\0")
        return json.loads(message)

    def send(method: str, session: str | None = None, **params) -> dict:
        state["id"] += 1
        msg = {"id": state["id"], "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(to_browser[1], json.dumps(msg).encode() + b"\0")
        while True:
            m = read()
            if m.get("id") == state["id"]:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            state["events"].append(m)

    try:
        target = send("Target.createTarget", url="about:blank")["targetId"]
        s = send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            send(f"{domain}.enable", s)
        send("Page.navigate", s, url=index.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in state["events"]):
            state["events"].append(read())
        send("Runtime.evaluate", s, expression=WAIT_FOR_MEDIA, awaitPromise=True)
        seen = json.loads(send("Runtime.evaluate", s, expression=PROBE, returnByValue=True)["result"]["value"])
        size = send("Page.getLayoutMetrics", s)["cssContentSize"]
        png = send("Page.captureScreenshot", s, format="png", captureBeyondViewport=True,
                   clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        screenshot.write_bytes(base64.b64decode(png["data"]))
        send("Browser.close")
    finally:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for fd in (to_browser[1], from_browser[0]):
            os.close(fd)
    seen["problems"] = [json.dumps(e["params"])[:300] for e in state["events"] if _is_problem(e)]
    return seen


def _is_problem(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert", "warning")
    return method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning")
