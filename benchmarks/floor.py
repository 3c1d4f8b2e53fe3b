"""evalkit end to end against the compute floor and a naive sequential baseline, same clips, same run.

    .venv/bin/python benchmarks/floor.py [--suite en-base] [--model piper:joe] [--limit N]

- floor: the bare model calls alone, one after another, models already loaded and warm:
  synthesis, faster-whisper transcribe at evalkit's settings (int8, beam 5, temperature 0,
  filters off), speechmos DNSMOS, jiwer CER. Their sum is the floor; resampling and I/O are
  not in it.
- evalkit: `evalkit run` in a fresh process with an empty cache (EVALKIT_CACHE in a new
  temporary folder), default metric set, sqlite MLflow store: start-up, model loading,
  logging and writing outputs included. Then the same command again into another folder:
  the warm re-run (transcripts and metric values from the cache). Peak RSS of each process.
- naive: per utterance, load everything again (voice, openai-whisper fp32 from the converted
  checkpoint, a new DNSMOS session), synthesize, transcribe with whisper.transcribe, score.

Writes JSON and Markdown into --out. Only the espeak and piper voices are supported here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evalkit import suite as suite_mod
from evalkit.adapters import resolve as resolve_adapter
from evalkit.audio import resample
from evalkit.textnorm import cer_form, normalize
from evalkit.types import SynthesisRequest


def floor(suite, model: str) -> dict:
    import jiwer
    from speechmos import dnsmos

    from evalkit.asr.faster_whisper import DECODE_OPTIONS, FasterWhisperASR

    adapter = resolve_adapter(model)
    whisper = FasterWhisperASR("base").model
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


def evalkit_run(suite_name: str, model: str, limit: int | None, out: Path, cache: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "evalkit", "run", "--suite", suite_name, model, "--out", str(out),
           "--tracking-uri", f"sqlite:///{out.parent / 'mlflow.db'}"]
    if limit:
        cmd += ["--limit", str(limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, EVALKIT_CACHE=str(cache)))
    wall = time.perf_counter() - t0
    peak_mib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return wall, peak_mib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="en-base")
    ap.add_argument("--model", default="piper:joe")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/floor"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suite = suite_mod.load(args.suite).limited(args.limit)
    n = len(suite.utterances)
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        tmp = Path(tmp)
        cold, cold_mib = evalkit_run(args.suite, args.model, args.limit, tmp / "cold", tmp / "cache")
        warm, warm_mib = evalkit_run(args.suite, args.model, args.limit, tmp / "warm", tmp / "cache")
    f = floor(suite, args.model)
    result = {"suite": args.suite, "model": args.model, "utterances": n,
              "floor_s": {k: round(v, 2) for k, v in f.items()},
              "evalkit_cold_s": round(cold, 1), "evalkit_warm_s": round(warm, 1),
              # getrusage keeps the largest child so far: this is the peak over both runs.
              "evalkit_peak_mib": round(max(cold_mib, warm_mib)),
              "cold_over_floor": round(cold / f["total"], 2), "warm_over_cold": round(warm / cold, 3)}
    if not args.skip_naive:
        result["naive_s"] = round(naive(suite, args.model), 1)
        result["naive_over_evalkit"] = round(result["naive_s"] / cold, 2)
    name = f"{args.suite}--{args.model.replace(':', '-')}--{n}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    rows = [f"| {k} | {v} |" for k, v in result.items()]
    (args.out / f"{name}.md").write_text("| what | value |\n|---|---|\n" + "\n".join(rows) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
