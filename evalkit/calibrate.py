"""`evalkit calibrate`: how much a suite's numbers move when nothing changed, and gates that say so.

The same model is evaluated `repeats` times through the normal runner (evalkit.runner.run, one run
folder and MLflow run each, OUT/repeat-01, ...), repeat i with RunConfig.seed = i - 1 (every
SynthesisRequest carries it: a stochastic model samples differently per repeat; repeat 1 is exactly
what `evalkit run` does). Metrics, their worker pool and Whisper load once (runner.Shared). The runs
are logged to the experiment `evalkit-calibrate-<suite>` unless --experiment says otherwise: never
to the suite's own experiment, where a repeat would become a nightly's `latest:` baseline. They are
tagged evalkit.calibration (this calibration's id) and evalkit.repeat. An interrupted calibration
continues with the same command and --out: finished repeats are kept, an unfinished one resumes.

Caches: transcripts and metric values are cached by audio content, so a second repeat of a
deterministic model would be answered from the cache and ASR or a metric that is not deterministic
would go unseen. Each repeat, and the determinism check, therefore runs with EVALKIT_CACHE pointed at
a fresh temporary folder (removed afterwards) whose models/ and runs/ link to the real cache's:
assembled models and downloaded runs are reused, every transcript and value is computed anew.

Determinism: the clips of repeat 1 are scored once more (OUT/rescore-01, the runner's re-score of a
run folder, same fresh-cache rule), and every utterance whose wav bytes are identical in several of
repeat 1..N and the re-score is compared: a metric key whose values differ there (beyond 1e-9 + 1e-6
relative) is reported not deterministic, with the utterance and both values, and so is ASR when a
transcript differs. A metric that memoizes inside its own object is not caught (it is loaded once).

Per metric value key (compared keys only, as in compare), over the utterances finite in every repeat:
- the run mean of each repeat; `sd`, the standard deviation of those means (ddof 1); `range`, max - min;
- per-utterance spread: the standard deviation across repeats of each utterance's value, its mean
  over utterances and its largest (with the utterance);
- `detectable`, the noise floor: the smallest difference between two runs that run-to-run noise
  alone is unlikely to produce, max(1.96 * sqrt(2) * sd, h): 1.96 sqrt(2) sd is the 95% two-sided
  bound on the difference of two independent run means, and h, the largest half-width of the paired
  bootstrap 95% CI (evalkit.compare, the interval `evalkit report` judges by) over the repeat pairs,
  is the smallest delta whose interval can exclude zero at this suite's size. 0 for a deterministic
  pipeline: then every consistent change is real and its own interval decides.

Gates (OUT/gates.yaml, or --gates-out): the suite-header syntax (evalkit.gates), `max_abs` for each
headline key (those the metrics declare; every directed key when none does) = max(detectable, the
largest |delta| between any two repeats), rounded up to two significant digits, and `default: none`
(other keys are reported, not gated; their calibrated values are listed as comments). The file is
then verified, not trusted by construction: it is read back with gates.from_file and every ordered
pair of repeats is compared (compare.compare) and judged (gates.judge); a gated key that would
regress has its gate raised to that pair's worsening and the check runs again. A pair with a new
per-utterance failure regresses whatever a gate says: that is reported, since no gate absorbs it.
With few repeats the spread is a rough estimate: five or more are worth their time for a nightly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import yaml

from . import cache as cache_mod
from . import gates as gates_mod
from . import record, runner, tracking
from .compare import Comparison, Incomparable, RunLike
from .compare import compare as compare_runs
from .errors import EvalkitError, StageFailed, TrackingError
from .progress import Progress
from .runs import LoadedRun
from .types import Row

CALIBRATION_TAG = "evalkit.calibration"
REPEAT_TAG = "evalkit.repeat"
SHARED_CACHE_PARTS = ("models", tracking.RUN_CACHE)  # reused by every repeat: they hold no result
Z95 = 1.959963984540054
ABS_TOL, REL_TOL = 1e-9, 1e-6
T = TypeVar("T")


@dataclass(frozen=True)
class CalibrateConfig:
    run: runner.RunConfig  # suite, model and every run option; out_dir, seed and tags are set per repeat
    repeats: int
    out_dir: Path | None = None
    gates_out: Path | None = None


@dataclass(frozen=True)
class KeySpread:
    key: str
    metric: str
    higher_is_better: bool | None
    headline: bool
    n: int  # utterances with a finite value in every repeat
    means: tuple[float, ...]  # per repeat
    sd: float
    range: float
    utterance_sd_mean: float
    utterance_sd_max: float
    utterance_sd_max_id: str | None
    ci_half_width: float
    detectable: float
    deterministic: bool
    nondeterminism: str | None  # where identical audio gave two values
    largest_delta: float  # max |delta| between two repeats (paired utterances)
    gate: float | None  # max_abs written; None: not gated


@dataclass(frozen=True)
class PairCheck:
    candidate: int  # repeat numbers, from 1
    baseline: int
    status: str  # pass | regressed | incomparable
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Calibration:
    calibration_id: str
    out_dir: Path
    suite: str
    suite_digest: str
    utterances: int
    model: str
    repeats: tuple[Path, ...]
    rescore: Path
    keys: tuple[KeySpread, ...]
    asr_deterministic: bool | None  # None: nothing was transcribed
    asr_note: str | None
    identical_audio: int  # utterances whose clip was byte-identical in at least two scorings
    pairs: tuple[PairCheck, ...]
    gates_file: Path
    tracking_errors: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def nondeterministic(self) -> list[KeySpread]:
        return [k for k in self.keys if not k.deterministic]


# --- a fresh cache per scoring -----------------------------------------------------------------


@contextmanager
def fresh_cache(folder: Path) -> Iterator[Path]:
    """EVALKIT_CACHE at `folder` (created) for the duration: no transcript or metric value from
    before is found, while models/ and runs/ link to the real cache's (nothing is assembled or
    downloaded twice)."""
    real = cache_mod.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for part in SHARED_CACHE_PARTS:
        target = cache_mod.cache_dir(part)
        link = folder / part
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    old = os.environ.get("EVALKIT_CACHE")
    os.environ["EVALKIT_CACHE"] = str(folder)
    try:
        yield real
    finally:
        if old is None:
            os.environ.pop("EVALKIT_CACHE", None)
        else:
            os.environ["EVALKIT_CACHE"] = old


# --- running the repeats -----------------------------------------------------------------------


def calibrate(config: CalibrateConfig, progress: Callable[[], AbstractContextManager[Progress]],
              say: Callable[[str], None]) -> Calibration:
    """Run the repeats and the determinism check, measure, write gates and calibration.json.
    Raises TrackingError (exit 3) or StageFailed (exit 4) after everything is written when MLflow
    could not take a run or a stage measured nothing."""
    if config.repeats < 2:
        raise EvalkitError("--repeats must be at least 2: a spread needs two runs")
    if config.run.audio_from:
        raise EvalkitError("evalkit calibrate synthesizes: it cannot re-score a recorded run")
    shared = runner.Shared()
    scratch = Path(tempfile.mkdtemp(prefix="evalkit-calibrate-"))
    try:
        first = runner.prepare(config.run, shared)  # bad input fails here, before any work
        suite = first.suite
        out_dir = config.out_dir or Path(f"evalkit-calibrate-{datetime.now():%Y%m%d-%H%M%S}-{suite.name}")
        experiment = config.run.experiment or f"evalkit-calibrate-{suite.name}"
        calibration_id = _earlier_id(out_dir) or uuid.uuid4().hex
        base = dataclasses.replace(config.run, experiment=experiment,
                                   tags={**config.run.tags, CALIBRATION_TAG: calibration_id})
        results: list[runner.RunResult] = []
        for i in range(config.repeats):
            run_config = dataclasses.replace(base, out_dir=out_dir / f"repeat-{i + 1:02d}", seed=i,
                                             tags={**base.tags, REPEAT_TAG: str(i + 1)})
            results.append(_one(run_config, f"repeat {i + 1}/{config.repeats} (seed {i})", scratch / f"cache-{i + 1}",
                                shared, progress, say))
        check_config = dataclasses.replace(base, out_dir=out_dir / "rescore-01", audio_from=str(results[0].out_dir),
                                           tags={**base.tags, REPEAT_TAG: "rescore-1"})
        check = _one(check_config, "determinism check: the clips of repeat 1 scored again", scratch / "cache-rescore",
                     shared, progress, say)
    except runner.Interrupted as exc:
        stop = runner.Interrupted(f"{exc}; or finish the whole calibration with the same evalkit calibrate command "
                                  f"and --out {out_dir}")
        stop.exit_code = exc.exit_code
        raise stop from None
    finally:
        shared.close()
        shutil.rmtree(scratch, ignore_errors=True)
    result = measure(calibration_id, out_dir, [_loaded(r) for r in results], _loaded(check),
                     config.gates_out or out_dir / "gates.yaml", config.run.model)
    errors = tuple(dict.fromkeys(r.tracking_error for r in [*results, check] if r.tracking_error))
    broken = tuple(dict.fromkeys(b for r in [*results, check] for b in r.broken))
    result = dataclasses.replace(result, tracking_errors=errors, broken=broken)
    write_json(result)
    return result


def _earlier_id(out_dir: Path) -> str | None:
    """The id of the calibration an interrupted run of this command started in out_dir."""
    try:
        saved = record.read_run(out_dir / "repeat-01")
    except EvalkitError:
        return None
    tags = (saved or {}).get("config", {}).get("tags") or {}
    found = tags.get(CALIBRATION_TAG) if isinstance(tags, dict) else None
    return found if isinstance(found, str) and found else None


def _one(config: runner.RunConfig, what: str, cache: Path, shared: runner.Shared,
         progress: Callable[[], AbstractContextManager[Progress]], say: Callable[[str], None]) -> runner.RunResult:
    """One scoring with a fresh cache; a repeat this calibration finished before (the same command
    run again after an interruption) is kept as it is, an unfinished one resumes (runner.run)."""
    assert config.out_dir is not None
    done = _finished(config.out_dir, config)
    if done is not None:
        say(f"{what}: finished before, kept ({config.out_dir})")
        return done
    say(f"{what} -> {config.out_dir}")
    with fresh_cache(cache), progress() as p:
        return runner.run(config, p, shared)


def _finished(folder: Path, config: runner.RunConfig) -> runner.RunResult | None:
    """The finished run in `folder` when it was made with this configuration; None when there is
    none (a folder holding another finished run is refused by runner.run)."""
    saved = record.read_run(folder) if (folder / record.SUMMARY).is_file() else None
    if saved is None or not isinstance(saved.get("config"), dict):
        return None
    if runner._comparable(saved["config"]) != runner._comparable(runner._config_dict(config)):
        return None
    summary, rows = record.load(folder)
    error = None if summary.tracking.run_id else "MLflow never took this repeat"
    return runner.RunResult(folder, summary, rows, error, summary.broken_stages)


def raise_problems(result: Calibration) -> None:
    """The exit code of a calibration whose files are written: 4 when a stage measured nothing, 3
    when MLflow could not take a run, as `evalkit run` decides."""
    if result.broken:
        raise StageFailed(f"a stage failed on every utterance, so the calibration measured nothing with it: "
                          f"{'; '.join(result.broken)} (the runs are saved in {result.out_dir})")
    if result.tracking_errors:
        raise TrackingError(f"{result.tracking_errors[0]}; every run is kept in {result.out_dir} (upload each with: "
                            "evalkit sync RUN_DIR)")


def _loaded(r: runner.RunResult) -> LoadedRun:
    return LoadedRun(r.summary, r.rows, r.out_dir / "audio", r.summary.tracking.run_id, f"folder:{r.out_dir}",
                     r.summary.tracking.uri)


# --- measuring ---------------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= ABS_TOL + REL_TOL * max(abs(a), abs(b))


def _wav_digest(run: LoadedRun, row: Row) -> str | None:
    path = run.audio_path(row)
    return cache_mod.sha256_file(path) if path is not None else None


def _identical_groups(scorings: Sequence[LoadedRun]) -> dict[str, list[list[Row]]]:
    """utterance id -> groups of two or more rows (from different scorings) of byte-identical clips."""
    found: dict[str, dict[str, list[Row]]] = {}
    for run in scorings:
        for row in run.rows:
            if row.failure:
                continue
            digest = _wav_digest(run, row)
            if digest is not None:
                found.setdefault(row.utterance_id, {}).setdefault(digest, []).append(row)
    return {uid: [g for g in by.values() if len(g) > 1] for uid, by in found.items()
            if any(len(g) > 1 for g in by.values())}


def _first_difference(groups: dict[str, list[list[Row]]], get: Callable[[Row], T],
                      same: Callable[[T, T], bool]) -> str | None:
    for uid, rows in groups.items():
        for group in rows:
            values = [get(r) for r in group]
            for v in values[1:]:
                if not same(values[0], v):
                    return f"{uid}: {values[0]!r} and {v!r} on identical audio"
    return None


def measure(calibration_id: str, out_dir: Path, repeats: Sequence[LoadedRun], check: LoadedRun, gates_file: Path,
            model: str) -> Calibration:
    """The spreads, the determinism verdicts and the verified gates file of finished repeats."""
    summary = repeats[0].summary
    groups = _identical_groups([*repeats, check])
    transcribed = any("transcript" in r.texts for run in repeats for r in run.rows)
    asr_note = _first_difference(groups, lambda r: r.texts.get("transcript"), lambda a, b: a == b) \
        if transcribed else None
    pairs = [(a, b) for a in range(len(repeats)) for b in range(len(repeats)) if a != b]
    # LoadedRun is what compare reads (its RunLike protocol names the fields as plain attributes).
    comparisons = {(a, b): compare_runs(cast(RunLike, repeats[a]), cast(RunLike, repeats[b])) for a, b in pairs}
    keys = summary.value_keys()
    headlines = {i.headline for i in summary.metrics.values() if i.headline in keys}
    if not headlines:  # nothing declared: every key with a direction is a headline
        headlines = {k for k, (_, higher) in keys.items() if higher is not None}
    spreads = [_spread(key, metric, higher, key in headlines, repeats, groups, comparisons)
               for key, (metric, higher) in keys.items()]
    notes = [f"{k.key}: no utterance has a value in every repeat, not measured" for k in spreads if k.n == 0]
    spreads, checks = _verified_gates(spreads, comparisons, gates_file, summary, model, len(repeats))
    return Calibration(calibration_id, out_dir, summary.suite.name, summary.suite.digest, summary.suite.utterances,
                       model, tuple(Path(r.source[len("folder:"):]) for r in repeats),
                       Path(check.source[len("folder:"):]), tuple(spreads),
                       None if not transcribed else asr_note is None, asr_note,
                       len(groups), tuple(checks), gates_file, notes=tuple(notes))


def _spread(key: str, metric: str, higher: bool | None, headline: bool, repeats: Sequence[LoadedRun],
            groups: dict[str, list[list[Row]]], comparisons: dict) -> KeySpread:
    by_id = [{r.utterance_id: r.value(key) for r in run.rows} for run in repeats]
    ids = [uid for uid in by_id[0] if all(math.isfinite(m.get(uid, math.nan)) for m in by_id)]
    values = np.array([[m[uid] for uid in ids] for m in by_id]).reshape(len(repeats), len(ids))
    means = values.mean(axis=1) if ids else np.full(len(repeats), math.nan)
    sd = float(np.std(means, ddof=1)) if ids else math.nan
    per_utt = values.std(axis=0, ddof=1) if ids else np.array([])
    worst = int(np.argmax(per_utt)) if per_utt.size else None
    deltas = [d for c in comparisons.values() if isinstance(c, Comparison) for d in c.metrics if d.key == key]
    half = max(((d.ci_high - d.ci_low) / 2 for d in deltas if math.isfinite(d.ci_low)), default=math.nan)
    largest = max((abs(d.delta) for d in deltas), default=math.nan)
    detectable = max(Z95 * math.sqrt(2) * sd, half) if ids and math.isfinite(half) else math.nan
    why = _first_difference(groups, lambda r: r.value(key), _same)
    gate = None
    if headline and higher is not None and math.isfinite(detectable):
        gate = round_up(max(detectable, largest if math.isfinite(largest) else 0.0))
    return KeySpread(key, metric, higher, headline, len(ids), tuple(float(m) for m in means), sd,
                     float(np.ptp(means)) if ids else math.nan,
                     float(per_utt.mean()) if per_utt.size else math.nan,
                     float(per_utt.max()) if per_utt.size else math.nan,
                     ids[worst] if worst is not None else None, half, detectable, why is None, why, largest, gate)


def round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits (0.006133 -> 0.0062): a gate never below
    what it must tolerate, written readably."""
    if value <= 0 or not math.isfinite(value):
        return 0.0
    exponent = math.floor(math.log10(value)) - digits + 1
    step = 10.0 ** exponent
    up = round(math.ceil(value / step - 1e-9) * step, max(0, -exponent))
    return up if up >= value else round(up + step, max(0, -exponent))


# --- gates: written, read back, verified --------------------------------------------------------


def _verified_gates(spreads: list[KeySpread], comparisons: dict, gates_file: Path, summary: record.RunRecord,
                    model: str, repeats: int) -> tuple[list[KeySpread], list[PairCheck]]:
    checks: list[PairCheck] = []
    for _ in range(5):  # each round can only raise gates; one raise absorbs its pair for good
        write_gates(gates_file, spreads, summary, model, repeats, None)
        rules = gates_mod.from_file(gates_file)
        raised: dict[str, float] = {}
        checks = []
        for (a, b), result in comparisons.items():
            verdict = gates_mod.judge(result, rules)
            checks.append(PairCheck(a + 1, b + 1, verdict.status, verdict.reasons))
            if isinstance(result, Incomparable):
                continue
            for m in result.metrics:
                v = verdict.metrics.get(m.key)
                if v is not None and v.regressed and v.gate is not None:
                    raised[m.key] = max(raised.get(m.key, 0.0), round_up(m.worsening * (1 + 1e-6)))
        if not raised:
            break
        spreads = [dataclasses.replace(s, gate=max(s.gate or 0.0, raised[s.key])) if s.key in raised else s
                   for s in spreads]
    passed = sum(c.status == "pass" for c in checks)
    write_gates(gates_file, spreads, summary, model, repeats, f"{passed} of {len(checks)} ordered repeat pairs pass")
    return spreads, checks


def write_gates(path: Path, spreads: Sequence[KeySpread], summary: record.RunRecord, model: str, repeats: int,
                verified: str | None) -> None:
    gated = {s.key: {"max_abs": s.gate} for s in spreads if s.gate is not None}
    others = [s for s in spreads if s.gate is None and s.higher_is_better is not None and math.isfinite(s.detectable)]
    lines = [f"# evalkit calibrate: {repeats} repeats of {model} on suite {summary.suite.name} "
             f"({summary.suite.utterances} utterances, digest {summary.suite.digest[:12]}), "
             f"{datetime.now():%Y-%m-%d %H:%M}",
             "# max_abs = max(noise floor, largest |delta| between two repeats), rounded up; see evalkit/calibrate.py",
             f"# verified with evalkit.gates on the repeats: {verified or 'pending'}"]
    if others:
        lines.append("# measured, not gated (uncomment to gate):")
        lines += [f"#   {s.key}: {{max_abs: {round_up(max(s.detectable, s.largest_delta))}}}" for s in others]
    body = yaml.safe_dump({"gates": {**gated, "default": "none"}}, sort_keys=False, allow_unicode=True,
                          default_flow_style=None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise EvalkitError(f"cannot write the gates file {path} ({exc.strerror or exc})") from None


def write_json(result: Calibration) -> Path:
    doc = {
        "calibration_id": result.calibration_id, "suite": result.suite, "suite_digest": result.suite_digest,
        "utterances": result.utterances, "model": result.model,
        "repeats": [str(p) for p in result.repeats], "rescore": str(result.rescore),
        "asr_deterministic": result.asr_deterministic, "asr_note": result.asr_note,
        "identical_audio_utterances": result.identical_audio, "gates_file": str(result.gates_file),
        "detectable": "max(1.96*sqrt(2)*sd of repeat means, largest paired-bootstrap 95% CI half-width over repeat "
                      "pairs)",
        "keys": [dataclasses.asdict(k) for k in result.keys],
        "pairs": [dataclasses.asdict(p) for p in result.pairs],
        "tracking_errors": list(result.tracking_errors), "broken": list(result.broken), "notes": list(result.notes),
        "gates_sha256": hashlib.sha256(result.gates_file.read_bytes()).hexdigest()
        if result.gates_file.is_file() else None,
    }
    path = result.out_dir / "calibration.json"
    try:
        path.write_text(json.dumps(record.jsonable(doc), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise EvalkitError(f"cannot write {path} ({exc.strerror or exc})") from None
    return path
