"""Wall time and headline scores of full-suite runs, as a user runs them (fresh processes).

    .venv/bin/python benchmarks/full_suites.py [--out benchmarks/results]

Runs `evalkit run` on ko-base with espeak:ko and en-base with piper:joe and espeak:en-us,
each into its own folder and a private sqlite MLflow store, and writes a JSON and Markdown
table: wall seconds (including start-up, model loading and MLflow logging), seconds per
utterance, mean and median CER, mean DNSMOS OVRL, failures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

JOBS = [("ko-base", "espeak:ko"), ("en-base", "piper:joe"), ("en-base", "espeak:en-us")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results") / f"{datetime.now():%Y%m%d-%H%M%S}")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances of each suite")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    results = []
    for suite, model in JOBS:
        run_dir = args.out / f"{suite}--{model.replace(':', '-')}"
        cmd = [sys.executable, "-m", "evalkit", "run", "--suite", suite, model, "--out", str(run_dir),
               "--tracking-uri", uri]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        agg = json.loads((run_dir / "summary.json").read_text())["aggregates"]
        n = int(agg["utterances/count"])
        results.append({"suite": suite, "model": model, "utterances": n, "wall_s": round(wall, 1),
                        "s_per_utt": round(wall / n, 2), "cer_mean": round(agg["cer/mean"], 4),
                        "cer_median": round(agg["cer/median"], 4),
                        "cer_clipped_mean": round(agg["cer_clipped/mean"], 4),
                        "dnsmos_ovrl_mean": round(agg["dnsmos_ovrl/mean"], 3), "failures": int(agg["failures/count"])})
        print(results[-1], flush=True)
    (args.out / "full_suites.json").write_text(json.dumps(results, indent=2))
    cols = list(results[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    (args.out / "full_suites.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
