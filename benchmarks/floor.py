"""evalkit end to end against the compute floor and a naive sequential baseline, same clips, same run.

    .venv/bin/python benchmarks/floor.py                 # en-base/piper:joe and ko-base/espeak:ko, full suites
    .venv/bin/python benchmarks/floor.py --job en-base=piper:joe --limit 20   # a quick look

Per suite and voice:
- floor: the bare model calls alone, one after another, models already loaded and warm, each
  at its fastest sequential setting: synthesis, faster-whisper transcribe at evalkit's decoding
  settings (int8, beam 5, temperature 0, filters off, one thread per core), speechmos DNSMOS,
  jiwer CER, with evalkit's allocator settings (evalkit/allocator.py). Their sum is the floor (its
  per-stage breakdown is reported); resampling and I/O are not in it.
- evalkit cold: `evalkit run` in a fresh process with an empty cache (EVALKIT_CACHE in a new
  temporary folder), default metric set, sqlite MLflow store: start-up, model loading, logging
  and writing outputs included.
- evalkit warm re-run: the same command into another folder (synthesis redone, transcripts and
  metric values from the cache).
- evalkit re-score +1 metric: `evalkit rescore COLD --add mel_dtw --reference-run COLD`, which
  computes only mel_dtw.
- peak memory: the largest sum of RSS over the evalkit process and its workers (sampled every
  0.1 s from /proc; shared pages count once per process, so this errs high).
- naive: per utterance, load everything again (voice, openai-whisper fp32 from the converted
  checkpoint, a new DNSMOS session), synthesize, transcribe with whisper.transcribe, score.

Writes floor.json and floor.md into --out. Only the espeak and piper voices are supported here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evalkit import allocator
from evalkit import suite as suite_mod
from evalkit.adapters import resolve as resolve_adapter
from evalkit.audio import resample
from evalkit.textnorm import cer_form, normalize
from evalkit.types import SynthesisRequest
from evalkit.workers import cores

JOBS = ("en-base=piper:joe", "ko-base=espeak:ko")


def floor(suite, model: str) -> dict:
    import jiwer
    from speechmos import dnsmos

    from evalkit.asr.faster_whisper import DECODE_OPTIONS, FasterWhisperASR

    adapter = resolve_adapter(model)
    asr = FasterWhisperASR("base")
    asr.threads = cores()  # its fastest alone (20 clips: 16.4 s against 19.0 s at CTranslate2's default 4)
    whisper = asr.model
    lang = suite.language
    warm = resample(adapter.synthesize([SynthesisRequest("w", suite.utterances[0].text, lang)])[0], 16000)
    list(whisper.transcribe(warm.samples, language=lang, **DECODE_OPTIONS)[0])
    dnsmos.run(np.clip(warm.samples, -1, 1), 16000)
    t = {"synthesis": 0.0, "asr": 0.0, "dnsmos": 0.0, "cer": 0.0}
    for u in suite.utterances:
        t0 = time.perf_counter()
        clip = adapter.synthesize([SynthesisRequest(u.id, u.text, lang)])[0]
        t["synthesis"] += time.perf_counter() - t0
        x = resample(clip, 16000).samples
        t0 = time.perf_counter()
        text = "".join(s.text for s in whisper.transcribe(x, language=lang, **DECODE_OPTIONS)[0])
        t["asr"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        dnsmos.run(np.clip(x, -1, 1), 16000)
        t["dnsmos"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ref, hyp = cer_form(normalize(u.text, lang), lang), cer_form(normalize(text, lang), lang)
        if hyp:
            jiwer.cer(ref, hyp)
        t["cer"] += time.perf_counter() - t0
    adapter.close()
    t["total"] = sum(t.values())
    return t


def naive(suite, model: str) -> float:
    import jiwer
    import whisper
    from speechmos import dnsmos as dnsmos_mod

    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    checkpoint = str(OpenAIWhisperASR("base").checkpoint)  # converted once, outside the timing
    lang = suite.language
    t0 = time.perf_counter()
    for u in suite.utterances:
        adapter = resolve_adapter(model)
        clip = adapter.synthesize([SynthesisRequest(u.id, u.text, lang)])[0]
        adapter.close()
        x = resample(clip, 16000).samples
        asr = whisper.load_model(checkpoint, device="cpu")
        text = asr.transcribe(x, language=lang, temperature=0.0, beam_size=5, fp16=False,
                              condition_on_previous_text=False, no_speech_threshold=None,
                              logprob_threshold=None, compression_ratio_threshold=None)["text"]
        dnsmos_mod.dnsmos = None  # speechmos keeps its sessions in a global: drop them, load per call
        dnsmos_mod.run(np.clip(x, -1, 1), 16000)
        ref, hyp = cer_form(normalize(u.text, lang), lang), cer_form(normalize(text, lang), lang)
        if hyp:
            jiwer.cer(ref, hyp)
    return time.perf_counter() - t0


def _tree_rss_mib(pid: int) -> float:
    """RSS of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total / 2**20


def timed(cmd: list[str], cache: Path) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree) of one evalkit command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, EVALKIT_CACHE=str(cache)))
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_mib(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, peak


def evalkit_runs(suite_name: str, model: str, limit: int | None, tmp: Path) -> dict:
    evalkit = [sys.executable, "-m", "evalkit"]
    uri = ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    run = [*evalkit, "run", "--suite", suite_name, model, *uri, *(["--limit", str(limit)] if limit else [])]
    cache = tmp / "cache"
    cold, cold_mib = timed([*run, "--out", str(tmp / "cold")], cache)
    warm, warm_mib = timed([*run, "--out", str(tmp / "warm")], cache)
    rescore, rescore_mib = timed([*evalkit, "rescore", str(tmp / "cold"), "--add", "mel_dtw", "--reference-run",
                                  str(tmp / "cold"), "--out", str(tmp / "rescore"), *uri], cache)
    summary = json.loads((tmp / "cold" / "summary.json").read_text())
    return {"cold": cold, "warm": warm, "rescore": rescore, "peak_mib": max(cold_mib, warm_mib, rescore_mib),
            "cer_mean": summary["aggregates"].get("cer/mean"),
            "dnsmos_ovrl": summary["aggregates"].get("dnsmos_ovrl/mean")}


def bench(suite_name: str, model: str, limit: int | None, skip_naive: bool) -> dict:
    suite = suite_mod.load(suite_name).limited(limit)
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        e = evalkit_runs(suite_name, model, limit, Path(tmp))
    f = floor(suite, model)
    result = {"suite": suite_name, "model": model, "utterances": len(suite.utterances), "cores": cores(),
              "floor_s": {k: round(v, 2) for k, v in f.items()},
              "evalkit_cold_s": round(e["cold"], 1), "evalkit_warm_rerun_s": round(e["warm"], 1),
              "evalkit_rescore_plus_mel_dtw_s": round(e["rescore"], 1), "evalkit_peak_mib": round(e["peak_mib"]),
              "cold_over_floor": round(e["cold"] / f["total"], 2),
              "rescore_over_cold": round(e["rescore"] / e["cold"], 3),
              "cer_mean": e["cer_mean"], "dnsmos_ovrl_mean": e["dnsmos_ovrl"]}
    if not skip_naive:
        result["naive_s"] = round(naive(suite, model), 1)
        result["naive_over_evalkit"] = round(result["naive_s"] / e["cold"], 2)
    print(json.dumps(result), flush=True)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| suite | voice | utt | floor s (synth + ASR + DNSMOS + CER) | evalkit cold s | cold / floor "
             "| naive s | naive / evalkit | warm re-run s | re-score +mel_dtw s | re-score / cold | peak MiB |",
             "|" + "---|" * 12]
    for r in results:
        f = r["floor_s"]
        lines.append(f"| {r['suite']} | {r['model']} | {r['utterances']} | {f['total']:.1f} ({f['synthesis']:.1f} + "
                     f"{f['asr']:.1f} + {f['dnsmos']:.1f} + {f['cer']:.2f}) | {r['evalkit_cold_s']} | "
                     f"{r['cold_over_floor']}x | {r.get('naive_s', '-')} | {r.get('naive_over_evalkit', '-')}x | "
                     f"{r['evalkit_warm_rerun_s']} | {r['evalkit_rescore_plus_mel_dtw_s']} | "
                     f"{r['rescore_over_cold']:.1%} | {r['evalkit_peak_mib']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    allocator.keep_freed_memory()  # the floor gets evalkit's allocator settings too: a fair floor
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", help=f"SUITE=MODEL (repeatable); default: {' and '.join(JOBS)}")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances of each suite")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/floor"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for job in args.job or JOBS:
        suite_name, _, model = job.partition("=")
        results.append(bench(suite_name, model, args.limit, args.skip_naive))
        (args.out / "floor.json").write_text(json.dumps(results, indent=2))
        (args.out / "floor.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
