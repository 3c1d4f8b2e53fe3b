"""A comparison as files a person reads: OUT/index.html, OUT/summary.md, OUT/comparison.json.

index.html is self-contained: inline CSS, plots as inline SVG images, no scripts and no network
resources; the only files it points at are the wav files copied into OUT/audio/{candidate,
baseline,reference}/, by relative path, so the folder can be zipped, uploaded as a CI artifact or
logged to MLflow and still play. summary.md is the same verdict for a CI comment or job summary.
Every run-provided string is escaped (html.escape, _md).

Only audio that belongs to the runs is copied (and so uploaded with the report): each run's own
clips (LoadedRun.audio_path: regular files inside its audio folder, symlinks resolved), and
reference audio only when it provably is what the candidate was scored against
(runs.reference_paths checks the recorded reference digest); otherwise no reference players, with
a note. Local absolute paths of gates files are not shown (gates.display_path).

Keys without a direction (higher_is_better None, e.g. duration_ratio) show "↕" where other keys
show ↑ or ↓, the status "changed" or "same", and rank "most changed" utterances by the size of
their change, never as lower-is-better. Δ % is shown only where a percentage means something
(compare.relative_change: not for a baseline mean near zero), else "–".
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from . import __version__, record
from .compare import Comparison, Incomparable, MetricDelta
from .errors import EvalkitError
from .gates import Verdict
from .runs import LoadedRun

WORST = 10
FILES = ("index.html", "summary.md", "comparison.json", "audio")
# Emoji for CI comments (GitHub renders them); plain symbols in HTML, which common fonts carry.
_MARK = {"pass": "✅ pass", "regressed": "❌ regressed", "incomparable": "⚠️ incomparable"}
_SYMBOL = {"pass": "✓ pass", "regressed": "✗ regressed", "incomparable": "⚠ incomparable"}
_EDIT = re.compile(r"\[([^\[\]→]*)→([^\[\]]*)\]|\[-([^\[\]]*)\]|\[\+([^\[\]]*)\]")


def arrow(higher_is_better: bool | None) -> str:
    """↑ higher is better, ↓ lower is better, ↕ no direction."""
    return "↕" if higher_is_better is None else "↑" if higher_is_better else "↓"


def pct(m: MetricDelta, digits: int = 3) -> str:
    """Δ % of the baseline mean, or "–" when the baseline is too near zero (compare.relative_change)."""
    r = m.rel_delta
    return fmt(100 * r, True, digits) + " %" if math.isfinite(r) else fmt(None)


def _worst_title(m: MetricDelta) -> str:
    return "Most changed utterances" if m.higher_is_better is None else "Worst-regressed utterances"


def worst_metric(result: Comparison, worst_by: str) -> MetricDelta | None:
    """The key that ranks utterances: `worst_by` when compared, else the first that got worse."""
    by_key = {m.key: m for m in result.metrics}
    return by_key.get(worst_by) or next((m for m in result.metrics if m.direction == "worse"), None)


def worst_utterances(m: MetricDelta | None, k: int = WORST) -> list[tuple[str, float, float]]:
    """The k utterances that got most worse on m; for a key without a direction, the k that changed
    most either way."""
    if m is None:
        return []
    if m.higher_is_better is None:
        ranked = sorted(m.pairs, key=lambda p: -abs(p[1] - p[2]))
        return [p for p in ranked if p[1] != p[2]][:k]
    sign = -1.0 if m.higher_is_better else 1.0
    ranked = sorted(m.pairs, key=lambda p: -sign * (p[1] - p[2]))
    return [p for p in ranked if sign * (p[1] - p[2]) > 0][:k]


def write(out_dir: Path, candidate: LoadedRun, baseline: LoadedRun, result: Comparison | Incomparable,
          verdict: Verdict, worst_by: str = "cer") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in FILES)
    if foreign:  # the folder is rewritten: never one that holds anything but an earlier report
        raise EvalkitError(f"{out_dir} holds other files ({', '.join(foreign[:3])}); choose an empty --out")
    shutil.rmtree(out_dir / "audio", ignore_errors=True)  # no stale clips from an earlier report
    m = worst_metric(result, worst_by) if isinstance(result, Comparison) else None
    worst = worst_utterances(m)
    md = markdown(candidate, baseline, result, verdict, m, worst)
    (out_dir / "summary.md").write_text(md, encoding="utf-8")
    page = _html(out_dir, candidate, baseline, result, verdict, m, worst)
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    doc = record.jsonable(_as_json(candidate, baseline, result, verdict))
    (out_dir / "comparison.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return out_dir / "index.html"


def fmt(v: float | None, signed: bool = False, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{digits}g}" if signed else f"{v:.{digits}g}"


def ci_text(m: MetricDelta, digits: int = 4) -> str:
    return f"[{fmt(m.ci_low, True, digits)}, {fmt(m.ci_high, True, digits)}]"


def metric_status(verdict: Verdict, m: MetricDelta) -> str:
    v = verdict.metrics.get(m.key)
    if v is not None and v.regressed:
        return "regressed"
    if m.direction == "worse" and v is not None and v.gate is not None:
        return "worse, within gate"
    return m.direction


def _gate(verdict: Verdict, m: MetricDelta) -> str:
    if m.higher_is_better is None:
        return "none (no direction)"
    v = verdict.metrics.get(m.key)
    return "none" if v is None or v.gate is None else f"≤ {fmt(v.allowed)} worse"


def _md(s) -> str:
    """Plain text inside a Markdown table cell: no markup, no broken columns."""
    s = " ".join(str(s).split())
    return re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", s)


def _rows(run: LoadedRun) -> dict[str, dict]:
    return {r["id"]: r for r in run.rows}


def markdown(candidate, baseline, result, verdict, m, worst) -> str:
    lines = [f"## evalkit: {_MARK[verdict.status]}", "",
             f"Candidate {_md(candidate.label)} vs baseline {_md(baseline.label)} "
             f"(baseline: {_md(baseline.source)}), suite {_md(candidate.summary['suite']['name'])}."]
    if verdict.reasons:
        lines += ["", "**Incomparable:**" if verdict.status == "incomparable" else "**Regressions:**"]
        lines += [f"- {_md(r)}" for r in verdict.reasons]
    if isinstance(result, Incomparable):
        return "\n".join(lines) + "\n"
    lines += ["", f"{result.paired} paired utterances; gates: {_md(verdict.gates_source)}.", "",
              "| metric | baseline | candidate | Δ | 95% CI | p | gate | status |",
              "|---|---:|---:|---:|---|---:|---|---|"]
    for d in result.metrics:
        lines.append(f"| {_md(d.key)} {arrow(d.higher_is_better)} | {fmt(d.baseline_mean)} | {fmt(d.candidate_mean)} "
                     f"| {fmt(d.delta, True)} | {ci_text(d)} | {fmt(d.p_value)} | {_gate(verdict, d)} "
                     f"| {metric_status(verdict, d)} |")
    if worst:
        cand, base = _rows(candidate), _rows(baseline)
        lines += ["", f"### {_worst_title(m)} (by {_md(m.key)})", "",
                  f"| id | {_md(m.key)} baseline → candidate | text | baseline transcript | candidate transcript |",
                  "|---|---|---|---|---|"]
        for uid, c, b in worst:
            lines.append(f"| {_md(uid)} | {fmt(b)} → {fmt(c)} ({fmt(c - b, True)}) | {_md(cand[uid].get('text', ''))} "
                         f"| {_md(base[uid].get('transcript') or '')} | {_md(cand[uid].get('transcript') or '')} |")
    if result.new_failures:
        lines += ["", "### New failures", ""] + [f"- {_md(f.utterance_id)}: {_md(f.reason)}" for f in result.new_failures]
    lines += ["", f"<sub>evalkit {__version__}: paired bootstrap CI ({result.resamples} resamples, seed "
                  f"{result.seed}), two-sided Wilcoxon signed-rank p.</sub>"]
    return "\n".join(lines) + "\n"


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _alignment(s: str | None) -> str:
    """The intelligibility alignment ([a→b], [-a], [+b]) with the edits highlighted."""
    if not s:
        return ""
    out, pos = [], 0
    for hit in _EDIT.finditer(s):
        out.append(_e(s[pos:hit.start()]))
        sub_a, sub_b, dele, ins = hit.groups()
        if dele is not None:
            out.append(f'<del title="deleted">{_e(dele)}</del>')
        elif ins is not None:
            out.append(f'<ins title="inserted">{_e(ins)}</ins>')
        else:
            out.append(f'<span class="sub" title="substituted">{_e(sub_a)}→{_e(sub_b)}</span>')
        pos = hit.end()
    return "".join(out) + _e(s[pos:])


def _copy_audio(out_dir: Path, src: Path | None, kind: str, uid: str) -> str | None:
    """Copies a clip that the callers vetted (audio_path, reference_paths); only a regular file,
    read at its resolved place (never a device or a pipe that a link points at)."""
    if src is None:
        return None
    try:
        src = Path(src).resolve()
    except (OSError, RuntimeError):
        return None
    if not src.is_file():
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", uid).lstrip(".") or "utterance"
    rel = Path("audio") / kind / f"{safe}{Path(src).suffix.lower() or '.wav'}"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / rel)
    return rel.as_posix()


def _player(rel: str | None) -> str:
    return f'<audio controls preload="metadata" src="{_e(rel)}"></audio>' if rel else '<span class="muted">no audio</span>'


def _utterance(out_dir, uid, candidate, baseline, refs, head: str) -> str:
    c, b = _rows(candidate).get(uid, {}), _rows(baseline).get(uid, {})
    players = {kind: _copy_audio(out_dir, src, kind, uid) for kind, src in
               (("candidate", candidate.audio_path(c)), ("baseline", baseline.audio_path(b)),
                ("reference", refs.get(uid)))}
    rows = "".join(
        f"<tr><th>{kind}</th><td>{_e(row.get('transcript') or '')}</td>"
        f"<td class=align>{_alignment(row.get('cer_alignment'))}</td><td>{_player(players[kind])}</td></tr>"
        for kind, row in (("candidate", c), ("baseline", b)))
    if players["reference"]:
        rows += f"<tr><th>reference</th><td></td><td></td><td>{_player(players['reference'])}</td></tr>"
    return (f'<section class="utt"><h3>{_e(uid)} <small>{head}</small></h3><p class="text">{_e(c.get("text", ""))}</p>'
            f"<table><tr><th></th><th>transcript</th><th>ASR errors vs text</th><th>audio</th></tr>{rows}</table></section>")


def _plot(m: MetricDelta) -> str:
    """Distribution (candidate vs baseline) and sorted per-utterance deltas, as an SVG data URI."""
    import matplotlib
    from matplotlib.figure import Figure

    c = np.array([p[1] for p in m.pairs])
    b = np.array([p[2] for p in m.pairs])
    d = c - b
    # Positive = worse; for a key without a direction, the size of the change (no side is worse).
    worse = np.abs(d) if m.higher_is_better is None else -d if m.higher_is_better else d
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "evalkit", "font.size": 8}):
        fig = Figure(figsize=(8.0, 2.1), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.boxplot([b, c], orientation="horizontal", tick_labels=["baseline", "candidate"], widths=0.5,
                    showfliers=False)
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(2, len(d)))
        ax1.scatter(b, 1 + jitter[0], s=9, color="#777", alpha=0.7, zorder=3)
        ax1.scatter(c, 2 + jitter[1], s=9, color="#c0392b" if m.direction == "worse" else "#2471a3", alpha=0.7, zorder=3)
        ax1.set_title(f"{m.key} ({_direction_words(m.higher_is_better)})")
        order = np.argsort(-worse, kind="stable")
        if m.higher_is_better is None:  # neither side is worse: one neutral colour
            colors = ["#2471a3" if w > 0 else "#999" for w in worse[order]]
        else:
            colors = ["#c0392b" if w > 0 else "#27ae60" if w < 0 else "#999" for w in worse[order]]
        ax2.bar(np.arange(len(d)), d[order], color=colors, width=0.8)
        ax2.axhline(0, color="#333", linewidth=0.6)
        if math.isfinite(m.ci_low):
            ax2.axhspan(m.ci_low, m.ci_high, color="#f39c12", alpha=0.25, linewidth=0, zorder=0)
        ax2.set_xticks([])
        first = "most changed" if m.higher_is_better is None else "most worsened"
        ax2.set_xlabel(f"{len(d)} utterances, {first} first; band: 95% CI of the mean")
        ax2.set_title("Δ per utterance (candidate − baseline)")
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _direction_words(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "no direction: neither way is better"
    return "higher is better" if higher_is_better else "lower is better"


_CSS = """body{font-family:system-ui,"Noto Sans","NanumGothic","Apple SD Gothic Neo",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
.verdict{padding:1rem 1.5rem;border-radius:8px;margin-bottom:1.5rem}.pass{background:#e8f6ec}.regressed{background:#fdecea}.incomparable{background:#fff4e0}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .55rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.regressed td{background:#fdecea}tr.worse td{background:#fff8e6}
.utt{border-top:1px solid #ccc;margin-top:1rem}.text{font-size:1.05rem}.align{font-family:ui-monospace,monospace}
del{background:#f5b7b1}ins{background:#abebc6;text-decoration:none}.sub{background:#f9e79f}.muted{color:#888}
img.plot{display:block;max-width:100%;margin:.5rem 0}footer{margin-top:2rem;color:#666;font-size:.85rem}"""


def _html(out_dir, candidate, baseline, result, verdict, m, worst) -> str:
    s = candidate.summary["suite"]
    parts = [f'<header class="verdict {verdict.status}"><h1>{_e(_SYMBOL[verdict.status])}</h1>'
             f"<p>Candidate <b>{_e(candidate.label)}</b> <small>{_e(candidate.source)}</small><br>"
             f"Baseline <b>{_e(baseline.label)}</b> <small>{_e(baseline.source)}</small><br>"
             f"Suite <b>{_e(s['name'])}</b> v{_e(s.get('version', ''))} ({_e(s.get('language', ''))})</p>"]
    if verdict.reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in verdict.reasons) + "</ul>")
    parts.append("</header>")
    if isinstance(result, Comparison):
        parts.append(f"<h2>Metrics</h2><p>{result.paired} paired utterances. Gates: {_e(verdict.gates_source)}.</p>"
                     "<table><tr><th>metric</th><th>baseline</th><th>candidate</th><th>Δ</th><th>Δ %</th>"
                     "<th>95% CI of Δ</th><th>p (Wilcoxon)</th><th>gate</th><th>status</th></tr>")
        for d in result.metrics:
            st = metric_status(verdict, d)
            parts.append(f'<tr class="{_e(st.split(",")[0])}"><td title="{_e(_direction_words(d.higher_is_better))}">'
                         f'{_e(d.key)} {arrow(d.higher_is_better)}</td>'
                         + "".join(f"<td class=num>{v}</td>" for v in (
                             fmt(d.baseline_mean), fmt(d.candidate_mean), fmt(d.delta, True),
                             _e(pct(d)), _e(ci_text(d)), fmt(d.p_value)))
                         + f"<td>{_e(_gate(verdict, d))}</td><td>{_e(st)}</td></tr>")
        parts.append("</table>")
        parts += [f"<p class=muted>{_e(n)}</p>" for n in verdict.notes]
        if any(not math.isfinite(d.rel_delta) for d in result.metrics):
            parts.append("<p class=muted>Δ % is left out (–) where the baseline mean is within one standard "
                         "deviation of the per-utterance values from zero: a percentage of it would be noise.</p>")
        refs, ref_note = _references(candidate)
        if ref_note:
            parts.append(f"<p class=muted>{_e(ref_note)}</p>")
        if result.new_failures:
            parts.append("<h2>New failures</h2>")
            parts += [_utterance(out_dir, f.utterance_id, candidate, baseline, refs, _e(f.reason))
                      for f in result.new_failures]
        if m is not None:
            parts.append(f"<h2>{_worst_title(m)} (by {_e(m.key)})</h2>")
            if not worst:
                moved = "changed" if m.higher_is_better is None else "got worse"
                parts.append(f"<p>No utterance {moved} on {_e(m.key)}.</p>")
            parts += [_utterance(out_dir, uid, candidate, baseline, refs,
                                 f"{_e(m.key)} {fmt(b)} → {fmt(c)} ({fmt(c - b, True)})") for uid, c, b in worst]
        changed = [d for d in result.metrics if any(c != b for _, c, b in d.pairs)]
        parts.append("<h2>Distributions and per-utterance deltas</h2>")
        parts += [f'<img class="plot" alt="{_e(d.key)}: distributions and per-utterance deltas" src="{_plot(d)}">'
                  for d in changed]
        unchanged = [d.key for d in result.metrics if d not in changed]
        if unchanged:  # a plot of identical values shows nothing
            parts.append(f"<p class=muted>Identical on every utterance: {_e(', '.join(unchanged))}.</p>")
        parts.append(f"<footer>evalkit {_e(__version__)} · paired over utterance ids · 95% percentile bootstrap CI "
                     f"({result.resamples} resamples, seed {result.seed}) · two-sided Wilcoxon signed-rank p</footer>")
    lang = _e(s.get("language", "en"))
    return (f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>evalkit report: {_e(verdict.status)} · {_e(s['name'])}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def _references(run: LoadedRun) -> tuple[dict[str, Path], str | None]:
    """The candidate's reference clips, and a note when it names references that are not played."""
    from .runs import reference_paths

    try:
        refs = reference_paths(run.summary, [r.get("id") for r in run.rows if r.get("id") is not None])
    except Exception:  # listening aids only: a missing or changed suite must not cost the report
        refs = {}
    named = str((run.summary.get("params") or {}).get("reference") or "none")
    if refs or named == "none":
        return refs, None
    return refs, ("Reference audio is not played: it could not be verified as the audio the candidate "
                  "was scored against (its reference digest does not match, or it is gone).")


def _as_json(candidate, baseline, result, verdict) -> dict:
    out = {"verdict": verdict.status, "reasons": list(verdict.reasons), "notes": list(verdict.notes),
           "gates": verdict.gates_source,
           "candidate": {"source": candidate.source, "mlflow_run_id": candidate.mlflow_run_id,
                         "run_id": candidate.summary.get("run_id")},
           "baseline": {"source": baseline.source, "mlflow_run_id": baseline.mlflow_run_id,
                        "run_id": baseline.summary.get("run_id")}}
    if isinstance(result, Comparison):
        out["paired"] = result.paired
        # delta_pct: 100 * delta / |baseline|, null where the report shows no Δ % (baseline near zero).
        # higher_is_better: null for a key without a direction.
        out["metrics"] = [{"key": d.key, "higher_is_better": d.higher_is_better, "n": d.n,
                           "baseline": d.baseline_mean, "candidate": d.candidate_mean, "delta": d.delta,
                           "delta_pct": 100 * d.rel_delta,
                           "ci95": [d.ci_low, d.ci_high], "p": d.p_value,
                           "direction": d.direction, "status": metric_status(verdict, d)} for d in result.metrics]
        out["new_failures"] = [{"id": f.utterance_id, "reason": f.reason} for f in result.new_failures]
    return out
