"""evalkit run against a competent sequential script on the same clips: wall, start-up, busy cores, memory, stages.

    .venv/bin/python benchmarks/speed.py    # en-base/piper:joe 20 utterances, full en-base, full ko-base/espeak:ko
    .venv/bin/python benchmarks/speed.py --job en-base=piper:joe --limit 3 --out /tmp/speedtest   # a smoke run

Per suite and voice, each measurement --repeat times:
- sequential: a fresh Python process running this file with --sequential, the script a competent
  researcher would write. It imports, loads the voice (evalkit.adapters.resolve), faster-whisper
  (the very model folder evalkit uses, int8 on CPU, one thread per core, evalkit's DECODE_OPTIONS)
  and DNSMOS (its ONNX sessions pinned to one thread, as metrics/quality.py does) once, then per
  utterance, one after another: synthesize, write the 16-bit wav, resample to 16 kHz
  (evalkit.audio.resample), transcribe, DNSMOS, CER (metrics/intelligibility.py's own code). It
  runs with evalkit's allocator settings (evalkit/allocator.py), as the floor does, so the ratio
  measures evalkit's scheduling and overheads and not a malloc setting; --plain-malloc leaves it
  glibc's defaults. Timed from this process: wall (start-up included), peak tree RSS, CPU seconds.
- evalkit: `evalkit run` in a fresh process with empty transcript and score caches (EVALKIT_CACHE
  in a new temporary folder, its models/ the user's, where the bundled Whisper is assembled once),
  its default metrics (intelligibility and dnsmos on these suites, which have no reference audio),
  a sqlite MLflow store created beforehand (as a user's exists), --trace. Wall; peak
  RSS of the process tree (sampled every 0.1 s from /proc, shared pages once per process, so it
  errs high); CPU seconds of the tree from getrusage(RUSAGE_CHILDREN) before and after (evalkit
  reaps its metric workers, so their time is in it: checked against per-process /proc samples,
  `cpu_sampled_s`, which miss at most a sampling interval per process); busy cores = CPU s / wall s.
- from evalkit's trace: the first finished utterances (the end of the first `write progress.jsonl`:
  the first chunk's rows on disk, how many is reported; the sequential script's is its first
  utterance) from the process start (the trace's first start-up span begins there); seconds per
  category by self time (a span's duration less its nested spans', so nothing is counted twice) in
  the main process and in the metric workers; the main thread's waiting (category wait); per
  utterance, Whisper features and encode+decode, synthesis, and DNSMOS in the workers (the `metric
  dnsmos` spans over their n).
- floor: benchmarks/floor.py's floor(): the bare model calls, models warm, summed per stage.
- same work: the largest |difference| of per-utterance cer and dnsmos_ovrl between evalkit's
  utterances.jsonl and the sequential script's, and how many transcripts differ (all should be 0:
  the same stages on the same samples).
- cold 1 utterance: `evalkit run --limit 1`, fresh cache and folder, untraced, once per job. It
  runs first, so the OS file cache is equally warm for every measurement after it.

Writes speed.json and speed.md into --out. Only the espeak and piper voices are supported (floor.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
# (SUITE=MODEL, --limit): a 20-utterance look, then the full suites
DEFAULT_JOBS: tuple[tuple[str, int | None], ...] = (
    ("en-base=piper:joe", 20), ("en-base=piper:joe", None), ("ko-base=espeak:ko", None))
SEQUENTIAL_JSON = "sequential.json"
MAIN, WORKER = "evalkit", "evalkit metric worker"  # process_name metadata in the trace (evalkit/trace.py)
CPU_SAMPLE_EVERY = 5  # /proc CPU samples every 5th RSS sample: a check only, and each scan costs CPU we measure
Event = dict[str, Any]


# --- the sequential script (a process of its own: `--sequential SUITE MODEL`) ------------------


def sequential(suite_name: str, model: str, limit: int | None, out: Path, plain_malloc: bool) -> None:
    """One utterance after another, each model loaded once; writes out/sequential.json."""
    from evalkit import allocator, trace

    if not plain_malloc:
        allocator.keep_freed_memory()  # before any model starts its threads, as evalkit's CLI does
    from evalkit import suite as suite_mod

    suite = suite_mod.load(suite_name).limited(limit)
    score = _sequential_models(model, suite.language)
    loaded = time.time_ns()
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    first: int | None = None
    for u in suite.utterances:
        rows[u.id] = score(u, audio_dir)
        first = first or time.time_ns()
    began = trace.process_start_ns() or loaded  # None off Linux: then load time is not known
    result = {"utterances": rows, "load_s": (loaded - began) / 1e9,
              "first_utterance_s": ((first or loaded) - began) / 1e9, "loop_s": (time.time_ns() - loaded) / 1e9}
    (out / SEQUENTIAL_JSON).write_text(json.dumps(result, indent=1, ensure_ascii=False))


def _sequential_models(model: str, lang: str) -> Any:
    """Load the voice, Whisper and DNSMOS once; return the per-utterance step (utterance, audio dir) -> row."""
    import numpy as np
    from faster_whisper import WhisperModel
    from speechmos import dnsmos

    from evalkit.adapters import resolve
    from evalkit.asr.faster_whisper import DECODE_OPTIONS, SAMPLE_RATE, locate
    from evalkit.audio import as_pcm16, resample, write_wav
    from evalkit.textnorm import normalize
    from evalkit.types import ScoringItem, SynthesisRequest, Transcript, Utterance
    from evalkit.workers import cores
    from evalkit_metrics.intelligibility import Intelligibility
    from evalkit_metrics.quality import MIN_SECONDS, _pinned_sessions

    adapter = resolve(model)
    folder, _, _ = locate("base")  # evalkit's default --asr faster-whisper:base: the same weights
    whisper = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=cores())
    _pinned_sessions(dnsmos)  # one ONNX thread, exactly evalkit's sessions: same values, same cost
    intelligibility = Intelligibility()

    def step(u: Utterance, audio_dir: Path) -> dict[str, Any]:
        # Scored on the saved 16-bit samples, as evalkit scores them (evalkit.audio.as_pcm16)
        clip = as_pcm16(adapter.synthesize([SynthesisRequest(u.id, u.text, lang, u.speaker)])[0])
        write_wav(audio_dir / f"{u.id}.wav", clip)
        x = resample(clip, SAMPLE_RATE)
        segments, _ = whisper.transcribe(x.samples, language=lang, **DECODE_OPTIONS)
        text = "".join(s.text for s in segments).strip()
        ovrl = math.nan
        if len(x.samples) >= MIN_SECONDS * SAMPLE_RATE:  # shorter clips are NaN in evalkit too
            ovrl = float(dnsmos.run(np.clip(x.samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)["ovrl_mos"])
        item = ScoringItem(u, lang, x, Transcript(text, lang), normalize(u.text, lang), normalize(text, lang))
        cer = intelligibility.score([item])[0].values["cer"]
        return {"transcript": text, "cer": _finite(cer), "dnsmos_ovrl": _finite(ovrl)}

    return step


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --- running a command and watching its process tree -------------------------------------------


@dataclass
class Measured:
    wall_s: float
    peak_mib: float
    cpu_s: float  # getrusage(RUSAGE_CHILDREN) delta: the whole reaped tree
    cpu_sampled_s: float  # last /proc sample of each process of the tree: a lower bound, to check cpu_s
    launched_ns: int  # time.time_ns() just before the launch

    @property
    def busy_cores(self) -> float:
        return self.cpu_s / self.wall_s

    def to_json(self) -> dict[str, Any]:
        out = {k: round(v, 3) for k, v in asdict(self).items() if k != "launched_ns"}
        out["busy_cores"] = round(self.busy_cores, 2)
        # Workers not reaped would leave their CPU time out of getrusage: say so, never hide it
        out["workers_reaped"] = self.cpu_s >= 0.95 * self.cpu_sampled_s
        return out


def _tree_cpu_s(root: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of `root` and each of its descendants, from /proc."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parent[int(entry)], cpu[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue  # gone between listdir and read
    tree: dict[int, float] = {}
    todo = [root]
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    while todo:
        pid = todo.pop()
        if pid in cpu:
            tree[pid] = cpu[pid]
        todo.extend(children[pid])
    return tree


def watch(cmd: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `cmd` (stdout dropped, stderr to `log`); its wall, peak tree RSS and CPU time."""
    floor = _floor()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time_ns()
    t0 = time.perf_counter()
    peak, n = 0.0, 0
    cpu: dict[int, float] = {}
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while True:
            peak = max(peak, floor._tree_rss_mib(proc.pid))
            if n % CPU_SAMPLE_EVERY == 0:
                cpu.update(_tree_cpu_s(proc.pid))
            n += 1
            try:  # returns as soon as the process exits: the wall is not rounded up to a sampling interval
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                continue
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, peak, used, sum(cpu.values()), launched)


def _floor() -> ModuleType:
    """benchmarks/floor.py (benchmarks/ is no package: found beside this file), imported only here:
    the --sequential process must not pay for its imports."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import floor

    return floor


def _env(cache: Path | None = None) -> dict[str, str]:
    # --trace reads $EVALKIT_TRACE too: one left in our environment would trace the untraced runs
    env = {k: v for k, v in os.environ.items() if k != "EVALKIT_TRACE"}
    if cache is not None:
        env["EVALKIT_CACHE"] = str(cache)
    return env


def _limit(limit: int | None) -> list[str]:
    return ["--limit", str(limit)] if limit else []


def run_sequential(suite_name: str, model: str, limit: int | None, tmp: Path,
                   plain_malloc: bool) -> tuple[Measured, dict[str, Any]]:
    out = tmp / "sequential"
    out.mkdir()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sequential", suite_name, model, *_limit(limit),
           "--out", str(out), *(["--plain-malloc"] if plain_malloc else [])]
    # The user's own EVALKIT_CACHE: the script only reads the assembled Whisper folder from it, as a
    # researcher's script reads weights already on disk
    measured = watch(cmd, _env(), tmp / "sequential.log")
    return measured, json.loads((out / SEQUENTIAL_JSON).read_text())


def run_evalkit(suite_name: str, model: str, limit: int | None, tmp: Path, name: str,
                traced: bool) -> tuple[Measured, Path]:
    """`evalkit run` cold: empty transcript and score caches, a fresh process, into an MLflow store
    that exists (a user's store does; a new one costs a second of schema creation, once). The
    assembled Whisper folder is the user's, as the sequential script's is. Its measure and run folder."""
    base = tmp / name
    base.mkdir()
    out = base / "run"
    uri = f"sqlite:///{base / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", f"from evalkit import tracking; tracking.client({uri!r})"], check=True,
                   env=_env(), stdout=subprocess.DEVNULL)
    (base / "cache").mkdir()
    (base / "cache" / "models").symlink_to(_assembled_models())
    cmd = [sys.executable, "-m", "evalkit", "run", "--suite", suite_name, model, *_limit(limit),
           "--out", str(out), "--tracking-uri", uri]
    if traced:
        cmd += ["--trace", str(base / "trace.json")]
    return watch(cmd, _env(base / "cache"), base / "stderr.log"), out


def _assembled_models() -> Path:
    """The user's model cache, with the bundled Whisper assembled in it (a first run does that once)."""
    from evalkit.asr.faster_whisper import bundled_base
    from evalkit.cache import cache_dir

    bundled_base()
    return cache_dir("models")


# --- reading evalkit's trace -------------------------------------------------------------------


@dataclass
class Trace:
    spans: list[Event]  # the "X" events
    process: dict[int, str]  # pid -> process_name
    thread: dict[tuple[int, int], str]  # (pid, tid) -> thread_name
    main_pid: int

    @classmethod
    def read(cls, path: Path) -> Trace:
        data = json.loads(path.read_text(encoding="utf-8"))
        events = data["traceEvents"]
        meta = [e for e in events if e.get("ph") == "M"]
        process = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
        thread = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name"}
        return cls([e for e in events if e.get("ph") == "X"], process, thread, data["otherData"]["evalkit_pid"])

    def on_main_thread(self, e: Event) -> bool:
        return e["pid"] == self.main_pid and self.thread.get((e["pid"], e["tid"])) == "MainThread"

    def anchor(self) -> tuple[int, str]:
        """(microseconds, what it is) of the run's time 0: the process start, where the first start-up
        span begins (evalkit.trace.start); else the main process's first span."""
        startup = [e for e in self.spans if e["pid"] == self.main_pid and e["cat"] == "startup"]
        first = min(startup or [e for e in self.spans if e["pid"] == self.main_pid], key=lambda e: e["ts"])
        if first["name"].startswith("start-up: interpreter"):
            return first["ts"], "process start"
        return first["ts"], f"start of span {first['name']!r} (the process start was not known)"

    def end_us(self) -> int:
        return max(e["ts"] + e["dur"] for e in self.spans)


def self_seconds(spans: list[Event]) -> list[tuple[Event, float]]:
    """Each span with its self time: its duration less that of the spans nested in it on the same
    thread (evalkit.trace keeps nested spans nested to the microsecond), so stages sum without overlap."""
    by_thread: dict[tuple[int, int], list[Event]] = defaultdict(list)
    for e in spans:
        by_thread[(e["pid"], e["tid"])].append(e)
    out: list[tuple[Event, float]] = []
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))  # a parent before the children that start with it
        own = [e["dur"] / 1e6 for e in events]
        stack: list[int] = []  # the open spans (indexes into events), outermost first
        for i, e in enumerate(events):
            while stack and e["ts"] + e["dur"] > events[stack[-1]]["ts"] + events[stack[-1]]["dur"]:
                stack.pop()  # ends before e does: not e's parent
            if stack:
                own[stack[-1]] -= e["dur"] / 1e6
            stack.append(i)
        out.extend(zip(events, own, strict=True))
    return out


def first_utterance(t: Trace, launched_ns: int) -> dict[str, Any]:
    """When the first finished rows were on disk: from the process start (the trace's anchor) and from
    our launch of the command."""
    from evalkit.record import PROGRESS

    writes = [e for e in t.spans if e["name"] == f"write {PROGRESS}"]
    if not writes:
        return {"first_utterance_s": None, "note": f"no 'write {PROGRESS}' span in the trace"}
    first = min(writes, key=lambda e: e["ts"] + e["dur"])
    end = first["ts"] + first["dur"]
    zero, what = t.anchor()
    return {"first_utterance_s": round((end - zero) / 1e6, 3), "anchor": what,
            "first_utterance_from_launch_s": round((end * 1000 - launched_ns) / 1e9, 3),
            "first_rows": first.get("args", {}).get("rows")}


def breakdown(t: Trace) -> dict[str, Any]:
    """Self seconds per category, per process kind; the main thread's waiting and untraced time."""
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    main_thread = 0.0
    for e, own in self_seconds(t.spans):
        per[t.process.get(e["pid"], "?")][e["cat"]] += own
        main_thread += own if t.on_main_thread(e) else 0.0
    zero, _ = t.anchor()
    span = (t.end_us() - zero) / 1e6
    wait = sum(e["dur"] for e in t.spans if e["cat"] == "wait" and t.on_main_thread(e)) / 1e6
    return {"self_s": {kind: {c: round(s, 3) for c, s in sorted(cats.items(), key=lambda kv: -kv[1])}
                       for kind, cats in per.items()},
            "workers": len({e["pid"] for e in t.spans if t.process.get(e["pid"]) == WORKER}),
            "traced_s": round(span, 3), "main_thread_wait_s": round(wait, 3),
            "main_thread_untraced_s": round(span - main_thread, 3)}


def per_utterance(t: Trace) -> dict[str, float | None]:
    """Mean seconds per utterance of the costly steps, as evalkit ran them (beside each other)."""

    def mean(name: str) -> float | None:
        durs = [e["dur"] for e in t.spans if e["name"] == name]
        return round(sum(durs) / len(durs) / 1e6, 4) if durs else None

    dnsmos = [e for e in t.spans if e["name"] == "metric dnsmos"]
    pooled = [e for e in dnsmos if t.process.get(e["pid"]) == WORKER] or dnsmos  # no pool: scored in-process
    scored = sum(int(e.get("args", {}).get("n", 0)) for e in pooled)
    synth = [e for e in t.spans if e["name"] == "synthesize"]
    voiced = sum(len(str(e.get("args", {}).get("utterances", "")).split(",")) for e in synth)
    return {"whisper_features_s": mean("Whisper features"), "whisper_encode_decode_s": mean("Whisper encode+decode"),
            "dnsmos_s": round(sum(e["dur"] for e in pooled) / scored / 1e6, 4) if scored else None,
            "synthesis_s": round(sum(e["dur"] for e in synth) / voiced / 1e6, 4) if voiced else None}


# --- one job -----------------------------------------------------------------------------------


def same_work(run_dir: Path, seq: dict[str, Any]) -> dict[str, Any]:
    """evalkit's per-utterance values against the sequential script's: what differs, unhidden."""
    from evalkit.record import TABLE_JSONL

    rows = [json.loads(line) for line in (run_dir / TABLE_JSONL).read_text(encoding="utf-8").splitlines() if line]
    theirs = seq["utterances"]
    out: dict[str, Any] = {"utterances": len(rows), "missing_in_sequential": sum(r["id"] not in theirs for r in rows),
                           "transcripts_differ": sum(r.get("transcript") != theirs.get(r["id"], {}).get("transcript")
                                                     for r in rows if r["id"] in theirs)}
    for key in ("cer", "dnsmos_ovrl"):
        pairs = [(r.get(key), theirs[r["id"]].get(key)) for r in rows if r["id"] in theirs]
        diffs = [abs(a - b) for a, b in pairs if a is not None and b is not None]
        out[f"max_abs_diff_{key}"] = max(diffs) if diffs else None
        out[f"nan_in_one_only_{key}"] = sum((a is None) != (b is None) for a, b in pairs)
    return out


def measure(suite: Any, model: str, limit: int | None, plain_malloc: bool) -> dict[str, Any]:
    """One repeat: sequential, evalkit cold (traced), the floor, and whether they did the same work."""
    with tempfile.TemporaryDirectory(prefix="evalkit-speed-") as name:
        tmp = Path(name)
        seq, seq_out = run_sequential(suite.name, model, limit, tmp, plain_malloc)
        ek, run_dir = run_evalkit(suite.name, model, limit, tmp, "cold", traced=True)
        t = Trace.read(tmp / "cold" / "trace.json")
        result = {"sequential": {**seq.to_json(), **{k: round(v, 3) for k, v in seq_out.items() if k != "utterances"}},
                  "evalkit": ek.to_json(), "ratio": round(ek.wall_s / seq.wall_s, 3),
                  "trace": {**first_utterance(t, ek.launched_ns), **breakdown(t), "per_utterance_s": per_utterance(t)},
                  "same_work": same_work(run_dir, seq_out)}
    f = _floor().floor(suite, model)  # in this process, after the others: its loaded models slow nothing timed
    result["floor_s"] = {k: round(v, 3) for k, v in f.items()}
    result["evalkit_over_floor"] = round(ek.wall_s / f["total"], 3)
    return result


def cold_one(suite_name: str, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="evalkit-speed-1-") as name:
        m, _ = run_evalkit(suite_name, model, 1, Path(name), "one", traced=False)
    return {"wall_s": round(m.wall_s, 3), "peak_mib": round(m.peak_mib), "busy_cores": round(m.busy_cores, 2)}


def bench(job: str, limit: int | None, repeat: int, plain_malloc: bool) -> dict[str, Any]:
    from evalkit import suite as suite_mod
    from evalkit.workers import cores

    suite_name, _, model = job.partition("=")
    suite = suite_mod.load(suite_name).limited(limit)
    result: dict[str, Any] = {"suite": suite_name, "model": model, "limit": limit,
                              "utterances": len(suite.utterances), "cores": cores(),
                              "sequential_allocator": "glibc" if plain_malloc else "evalkit"}
    result["cold_1_utterance"] = cold_one(suite_name, model)  # first: it warms the OS file cache for the rest
    result["runs"] = [measure(suite, model, limit, plain_malloc) for _ in range(repeat)]
    print(json.dumps(result), flush=True)
    return result


# --- reporting ---------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| suite | model | utt | sequential s | evalkit s | evalkit / sequential | floor s | evalkit / floor "
             "| first utterance at s (sequential) | busy cores evalkit | busy cores sequential "
             "| peak MiB evalkit / sequential | cold 1-utt s (MiB) | max \\|Δcer\\| | max \\|Δdnsmos\\| |",
             "|" + "---|" * 15]
    for r in results:
        one = r["cold_1_utterance"]
        for run in r["runs"]:
            s, e, same = run["sequential"], run["evalkit"], run["same_work"]
            lines.append(
                f"| {r['suite']} | {r['model']} | {r['utterances']} | {s['wall_s']:.1f} | {e['wall_s']:.1f} | "
                f"{run['ratio']:.2f} | {run['floor_s']['total']:.1f} | {run['evalkit_over_floor']:.2f} | "
                f"{_f(run['trace']['first_utterance_s'])} ({_f(s.get('first_utterance_s'))}) | "
                f"{e['busy_cores']:.2f} | {s['busy_cores']:.2f} | {e['peak_mib']:.0f} / {s['peak_mib']:.0f} | "
                f"{one['wall_s']:.1f} ({one['peak_mib']}) | {_f(same['max_abs_diff_cer'], '.2g')} | "
                f"{_f(same['max_abs_diff_dnsmos_ovrl'], '.2g')} |")
    for r in results:
        for i, run in enumerate(r["runs"]):
            lines += ["", *stage_table(r, run, i)]
    return "\n".join(lines) + "\n"


def stage_table(r: dict[str, Any], run: dict[str, Any], i: int) -> list[str]:
    t, n = run["trace"], r["utterances"]
    main, workers = t["self_s"].get(MAIN, {}), t["self_s"].get(WORKER, {})
    lines = [f"### {r['suite']} / {r['model']}, {n} utterances, run {i + 1}: evalkit's stages (self seconds)", "",
             f"| category | main process | metric workers ({t['workers']}) |", "|---|---|---|"]
    for cat in sorted({*main, *workers}, key=lambda c: -(main.get(c, 0) + workers.get(c, 0))):
        lines.append(f"| {cat} | {_f(main.get(cat), '.2f')} | {_f(workers.get(cat), '.2f')} |")
    u, f, same, seq = t["per_utterance_s"], run["floor_s"], run["same_work"], run["sequential"]
    lines += ["", f"Traced {t['traced_s']:.2f} s from the {t.get('anchor', '?')}; the main thread waited "
                  f"{t['main_thread_wait_s']:.2f} s and ran {t['main_thread_untraced_s']:.2f} s outside any span. "
                  f"First rows ({t.get('first_rows')}) on disk at {_f(t['first_utterance_s'], '.2f')} s.",
              f"Per utterance in evalkit: Whisper features {_f(u['whisper_features_s'], '.3f')} s + encode+decode "
              f"{_f(u['whisper_encode_decode_s'], '.3f')} s, DNSMOS {_f(u['dnsmos_s'], '.3f')} s, synthesis "
              f"{_f(u['synthesis_s'], '.3f')} s; floor: ASR {f['asr'] / n:.3f} s, DNSMOS {f['dnsmos'] / n:.3f} s, "
              f"synthesis {f['synthesis'] / n:.3f} s, CER {f['cer'] / n:.4f} s.",
              f"Sequential: models loaded at {seq['load_s']:.2f} s, loop {seq['loop_s']:.2f} s. Same work: "
              f"{same['transcripts_differ']} transcripts differ, NaN in one only: cer "
              f"{same['nan_in_one_only_cer']}, dnsmos {same['nan_in_one_only_dnsmos_ovrl']}; CPU s evalkit "
              f"{run['evalkit']['cpu_s']:.1f} (/proc samples {run['evalkit']['cpu_sampled_s']:.1f}, workers reaped: "
              f"{run['evalkit']['workers_reaped']})."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", help="SUITE=MODEL (repeatable); default: "
                    + ", then ".join(f"{j} ({f'--limit {n}' if n else 'full'})" for j, n in DEFAULT_JOBS))
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances (overrides the defaults')")
    ap.add_argument("--repeat", type=int, default=1, help="run each measurement K times (the cold 1-utterance once)")
    ap.add_argument("--plain-malloc", action="store_true",
                    help="the sequential script keeps glibc's malloc defaults instead of evalkit's allocator settings")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"),
                    help="where speed.json and speed.md go (with --sequential: that script's folder)")
    ap.add_argument("--sequential", nargs=2, metavar=("SUITE", "MODEL"),
                    help="be the sequential script (what the benchmark launches and times)")
    args = ap.parse_args()
    if args.sequential:
        suite_name, model = args.sequential
        sequential(suite_name, model, args.limit, args.out, args.plain_malloc)
        return
    from evalkit import allocator

    allocator.keep_freed_memory()  # the floor runs in this process: evalkit's allocator settings, as floor.py
    jobs = [(j, args.limit) for j in args.job] if args.job else [(j, args.limit or n) for j, n in DEFAULT_JOBS]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for job, limit in jobs:
        results.append(bench(job, limit, args.repeat, args.plain_malloc))
        (args.out / "speed.json").write_text(json.dumps(results, indent=2))
        (args.out / "speed.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
