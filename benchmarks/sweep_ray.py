"""The Ray executor on one machine against the local executor, on the same sweep and the same run.

    .venv/bin/python benchmarks/sweep_ray.py [--limit 20] [--run-limit 60] [--metrics A,B] [--out DIR]

Needs the tests' plug-in (scripts/setup.sh installs it) and ray (`pip install 'evalkit-tts[ray]'`):
three `degraded-piper` checkpoints (Piper with noise of strength 0, 0.05, 0.3, at steps
1000..3000) on en-base. Both run as a user runs them (fresh processes, default workers), each
with its own empty evalkit cache and sqlite MLflow store:
- local: `evalkit sweep --suite en-base CKPT_DIR`;
- ray:   the same with `--executor ray` (a local Ray instance started and stopped by the
         command, one actor per node with its CPUs, loading Whisper and the metrics once).
Then one run of the first --run-limit utterances of en-base with Piper, `evalkit run` against
`evalkit run --executor ray` (the utterances in shards over the actors).
Prints and writes (JSON and Markdown) the wall seconds of each, the ratios ray / local (the
target: at most 1.15) and whether every per-utterance score is identical (timing columns
aside). Run it on a quiet machine: other work on 2 cores moves the ratio by 20 %.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

STRENGTHS = {1000: 0.0, 2000: 0.05, 3000: 0.3}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import _rows, _same, _timed  # noqa: E402  (benchmarks/sweep.py: the same comparison of scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results") / f"sweep-ray-{datetime.now():%Y%m%d-%H%M%S}")
    # Ray's fixed cost on one machine is 7-9 s (its start, the actor's own start): these sizes, a
    # fifth to a half of a real suite, are where a sweep begins; at 8 and 24 the ratio is 1.2-1.3.
    ap.add_argument("--limit", type=int, default=20, help="utterances of en-base per checkpoint")
    ap.add_argument("--metrics", default=None, help="comma-separated metrics (default: evalkit's default set)")
    ap.add_argument("--run-limit", type=int, default=60, help="utterances of en-base in the single run (0: skip it)")
    args = ap.parse_args()
    out = args.out.resolve()
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    from tiny_tts import save_degraded

    for step, strength in STRENGTHS.items():
        save_degraded(ckpts / f"ckpt-{step}.pt", strength, step=step)
    base = [sys.executable, "-m", "evalkit", "sweep", "--suite", "en-base", str(ckpts), "--limit", str(args.limit),
            *(["--metrics", args.metrics] if args.metrics else [])]
    env = {**os.environ, "EVALKIT_PROGRESS": "off", "RAY_TMPDIR": str(out)}
    load_before = os.getloadavg()[0]  # other work on the machine: the ratio means little above ~0.5
    seconds = {}
    for executor in ("local", "ray"):
        seconds[executor] = _timed([*base, "--executor", executor, "--tracking-uri",
                                    f"sqlite:///{out / (executor + '.db')}", "--out", str(out / executor)],
                                   {**env, "EVALKIT_CACHE": str(out / f"cache-{executor}")})
    record = json.loads((out / "local" / "sweep.json").read_text())
    identical = all(_same(_rows(out / "local" / e["run_dir"]), _rows(out / "ray" / e["run_dir"]))
                    for e in record["checkpoints"])
    result = {"checkpoints": len(STRENGTHS), "utterances_each": args.limit, "metrics": args.metrics or "default",
              "local_s": round(seconds["local"], 1), "ray_s": round(seconds["ray"], 1),
              "ratio": round(seconds["ray"] / seconds["local"], 3), "scores_identical": identical,
              "cores": len(os.sched_getaffinity(0)), "load_1min_before": round(load_before, 2)}
    if args.run_limit:
        one = [sys.executable, "-m", "evalkit", "run", "--suite", "en-base", "piper:joe", "--limit",
               str(args.run_limit), *(["--metrics", args.metrics] if args.metrics else [])]
        for executor in ("local", "ray"):
            seconds[f"run-{executor}"] = _timed(
                [*one, "--executor", executor, "--tracking-uri", f"sqlite:///{out / ('run-' + executor + '.db')}",
                 "--out", str(out / f"run-{executor}")], {**env, "EVALKIT_CACHE": str(out / f"cache-run-{executor}")})
        result |= {"run_utterances": args.run_limit, "run_local_s": round(seconds["run-local"], 1),
                   "run_ray_s": round(seconds["run-ray"], 1),
                   "run_ratio": round(seconds["run-ray"] / seconds["run-local"], 3),
                   "run_scores_identical": _same(_rows(out / "run-local"), _rows(out / "run-ray"))}
    (out / "sweep-ray.json").write_text(json.dumps(result, indent=2))
    cols = list(result)
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                       "| " + " | ".join(str(result[c]) for c in cols) + " |"])
    (out / "sweep-ray.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
