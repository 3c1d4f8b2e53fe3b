"""Per-engine ASR time per utterance and CER: faster-whisper vs openai-whisper on the same weights.

    .venv/bin/python benchmarks/asr_engines.py [--limit 30] [--out benchmarks/results/asr_engines.md]

en-base is rendered with piper:joe and ko-base with espeak:ko (each once, shared by both
engines); every clip is transcribed by each engine at evalkit's evaluation settings, models
loaded and warmed first. Reports seconds per utterance (wall, including feature extraction)
and mean / corpus CER with evalkit's normalizer, plus how many transcripts the engines agree on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from evalkit import suite as suite_mod
from evalkit.adapters import resolve as resolve_adapter
from evalkit.asr import resolve as resolve_asr
from evalkit.audio import resample
from evalkit.textnorm import cer_form, normalize
from evalkit.types import SynthesisRequest
from evalkit_metrics.intelligibility import edits

JOBS = [("en-base", "piper:joe"), ("ko-base", "espeak:ko")]
ENGINES = ["faster-whisper:base", "openai-whisper:base"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/asr_engines.md"))
    args = ap.parse_args()
    engines = {spec: resolve_asr(spec, "cpu") for spec in ENGINES}
    lines = ["| suite | voice | engine | utterances | s/utt | CER mean | CER corpus | identical transcripts |",
             "|---|---|---|---|---|---|---|---|"]
    for suite_name, model in JOBS:
        suite = suite_mod.load(suite_name).limited(args.limit)
        adapter = resolve_adapter(model)
        clips = [resample(adapter.synthesize([SynthesisRequest(u.id, u.text, suite.language)])[0], 16000)
                 for u in suite.utterances]
        texts = {}
        for spec, asr in engines.items():
            asr.transcribe(clips[:1], suite.language)  # warm
            t0 = time.perf_counter()
            texts[spec] = [t.text for t in asr.transcribe(clips, suite.language)]
            per_utt = (time.perf_counter() - t0) / len(clips)
            cers, total_edits, total_len = [], 0, 0
            for u, hyp in zip(suite.utterances, texts[spec], strict=True):
                ref_c = cer_form(normalize(u.text, suite.language), suite.language)
                hyp_c = cer_form(normalize(hyp, suite.language), suite.language)
                e = edits(ref_c, hyp_c, chars=True)
                n = e["sub"] + e["del"] + e["ins"]
                cers.append(n / e["ref_len"])
                total_edits, total_len = total_edits + n, total_len + e["ref_len"]
            same = sum(a == b for a, b in zip(texts[ENGINES[0]], texts[spec], strict=True))
            lines.append(f"| {suite_name} | {model} | {spec} | {len(clips)} | {per_utt:.2f} | "
                         f"{sum(cers) / len(cers):.4f} | {total_edits / total_len:.4f} | {same}/{len(clips)} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
