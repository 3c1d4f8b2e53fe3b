"""Cost per utterance of each metric's score() call, warm, on real Piper clips.

    .venv/bin/python benchmarks/metric_costs.py [--n 10] [--out benchmarks/results/metric_costs.md]

Renders N en-base sentences with piper:joe, uses a second rendering at length_scale 1.1 as the
reference (a realistic, not time-aligned pair; PESQ/STOI then report NaN by design, so they
are timed on the aligned pair: the clip against itself), warms every metric once, then times
score() per utterance (median and p90 over N) at the metric's own sample rate. The shared
mel-DTW alignment cache is cleared before every call, so mel_dtw and f0 each pay for their
DTW (in a real run the second of them finds it cached).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from evalkit import plugins
from evalkit import suite as suite_mod
from evalkit.adapters.piper import PiperAdapter
from evalkit.audio import resample
from evalkit.textnorm import normalize
from evalkit.types import ScoringItem, SynthesisRequest, Transcript
from evalkit_metrics import _dtw

ALIGNED_ONLY = {"pesq", "stoi"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/metric_costs.md"))
    args = ap.parse_args()
    utts = suite_mod.load("en-base").utterances[10:10 + args.n]
    piper = PiperAdapter("piper:joe")
    clips = [piper.synthesize([SynthesisRequest(u.id, u.text, "en")])[0] for u in utts]
    from piper import SynthesisConfig

    piper.syn_config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.1)
    refs = [piper.synthesize([SynthesisRequest(u.id, u.text, "en")])[0] for u in utts]
    seconds = [c.duration for c in clips]
    lines = [f"{len(utts)} Piper clips, {statistics.mean(seconds):.2f} s mean duration; warm; per utterance",
             "", "| metric | median ms | p90 ms |", "|---|---|---|"]
    for name, (target, _) in plugins.registered(plugins.METRICS).items():
        metric = plugins.load_target(target)()
        sr = metric.sample_rate
        items = []
        for u, c, r in zip(utts, clips, refs, strict=True):
            out = resample(c, sr)
            ref = out if name in ALIGNED_ONLY else resample(r, sr)
            items.append(ScoringItem(u, "en", out, Transcript(u.text, "en"), normalize(u.text, "en"),
                                     normalize(u.text, "en"), ref))
        metric.score(items[:1])  # warm: model loading, numba compilation
        times = []
        for it in items:
            _dtw._MEL_ALIGNMENTS.clear()  # each metric pays for its own DTW here, as when run alone
            t0 = time.perf_counter()
            metric.score([it])
            times.append((time.perf_counter() - t0) * 1000)
        lines.append(f"| {name} | {statistics.median(times):.1f} | {np.percentile(times, 90):.1f} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
