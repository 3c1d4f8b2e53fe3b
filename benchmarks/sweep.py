"""A 4-checkpoint sweep against 4 separate `evalkit run` commands on the same work.

    .venv/bin/python benchmarks/sweep.py [--limit 8] [--out benchmarks/results/sweep-<time>]

Needs the tests' plug-in (scripts/setup.sh installs it): four `degraded-piper` checkpoints
(Piper with noise of strength 0, 0.02, 0.08, 0.3, at steps 1000..4000). Both ways run as a
user runs them (fresh processes, default metrics and workers), each with its own empty evalkit
cache and sqlite MLflow store, so neither gains from the other's cache:
- separate: `evalkit run --suite en-base CKPT --step N` four times;
- sweep:    `evalkit sweep --suite en-base CKPT_DIR` once (Whisper, the metrics and their
            worker processes load once).
Prints and writes (JSON and Markdown) the wall seconds of each, the ratio sweep / separate, and
whether every per-utterance score is identical (timing columns aside). Run it on a quiet
machine: other work on 2 cores moves the ratio by 20 %.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

STRENGTHS = {1000: 0.0, 2000: 0.02, 3000: 0.08, 4000: 0.3}
TIMING = {"synth_seconds", "rtf"}  # wall-clock facts, never equal twice


def _rows(run_dir: Path) -> dict[str, dict]:
    rows = {}
    for line in (run_dir / "utterances.jsonl").read_text().splitlines():
        row = json.loads(line)  # flat: id, text, transcript, every value, failure, notes
        rows[row["id"]] = {k: v for k, v in row.items() if k not in TIMING and k not in ("audio_path", "notes")}
    return rows


def _same(a: dict, b: dict) -> bool:
    def eq(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (math.isnan(x) and math.isnan(y))
        return x == y  # JSON null (NaN) on both sides compares equal too
    return a.keys() == b.keys() and all(a[k].keys() == b[k].keys() and all(eq(a[k][f], b[k][f]) for f in a[k])
                                         for k in a)


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results") / f"sweep-{datetime.now():%Y%m%d-%H%M%S}")
    ap.add_argument("--limit", type=int, default=8, help="utterances of en-base per checkpoint")
    args = ap.parse_args()
    out = args.out.resolve()
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    from tiny_tts import save_degraded

    for step, strength in STRENGTHS.items():
        save_degraded(ckpts / f"ckpt-{step}.pt", strength, step=step)
    base = [sys.executable, "-m", "evalkit"]
    env = {**os.environ, "EVALKIT_PROGRESS": "off"}

    sep_env = {**env, "EVALKIT_CACHE": str(out / "cache-separate")}
    sep_uri = f"sqlite:///{out / 'separate.db'}"
    separate = 0.0
    for step in STRENGTHS:
        separate += _timed([*base, "run", "--suite", "en-base", str(ckpts / f"ckpt-{step}.pt"), "--step", str(step),
                            "--limit", str(args.limit), "--tracking-uri", sep_uri,
                            "--out", str(out / "separate" / str(step))], sep_env)
    sweep_env = {**env, "EVALKIT_CACHE": str(out / "cache-sweep")}
    swept = _timed([*base, "sweep", "--suite", "en-base", str(ckpts), "--limit", str(args.limit),
                    "--tracking-uri", f"sqlite:///{out / 'sweep.db'}", "--out", str(out / "sweep")], sweep_env)
    record = json.loads((out / "sweep" / "sweep.json").read_text())
    identical = all(_same(_rows(out / "separate" / str(e["step"])), _rows(out / "sweep" / e["run_dir"]))
                    for e in record["checkpoints"])
    result = {"checkpoints": len(STRENGTHS), "utterances_each": args.limit, "separate_s": round(separate, 1),
              "sweep_s": round(swept, 1), "ratio": round(swept / separate, 3), "scores_identical": identical,
              "cores": len(os.sched_getaffinity(0))}
    (out / "sweep.json.result").write_text(json.dumps(result, indent=2))
    cols = list(result)
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                       "| " + " | ".join(str(result[c]) for c in cols) + " |"])
    (out / "sweep.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
