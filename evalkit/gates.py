"""Regression gates and the verdict of a comparison.

A gate bounds how much a metric value key may worsen, candidate against baseline:

    gates:
      cer:         {max_abs: 0.01, max_rel: 0.10}   # mean CER may rise by 0.01 or by 10%
      dnsmos_ovrl: {max_abs: 0.10}                   # mean DNSMOS may fall by 0.1
      default:     {max_abs: 0.0}                    # every other compared key; `default: none` = report only

in the candidate suite's suite.yaml header, or in a YAML or TOML file (`--gates FILE`; the same
mapping, at the top level or under `gates`). With both limits the looser one applies (as in
numpy.isclose): a relative limit alone means nothing at a baseline of 0, an absolute one alone
ignores scale. Without any gates configured, `default: {max_abs: 0}`: any worsening the CI is
sure of regresses.

A key regresses only when its CI excludes zero on the worse side AND its mean worsening exceeds
its gate: noise never fails a build, nor does a real but tolerated change. A new per-utterance
failure (compare.NewFailure) is a regression whatever the gates say.

A gate may name a suite tag: `KEY@TAG` bounds KEY over the utterances carrying TAG alone, e.g.

    gates:
      cer: {max_abs: 0.01}
      cer@numbers_native: {max_abs: 0.05}          # CER of the native-number readings may rise by 0.05

(in TOML the key is quoted: `"cer@numbers_native" = { max_abs = 0.05 }`). The rule is the suite-wide
one applied to that tag's delta (compare.TagDelta): it regresses only when the tag's interval, which is
Bonferroni-corrected across the tags compared for KEY, excludes zero on the worse side AND the tag's
mean worsening exceeds the gate (max_rel is of the tag's own baseline mean). Only named tag gates
apply to tags: `default` is for the whole suite, so a noisy small tag never fails a build unless a
gate asks about it. A gate naming a tag that no utterance of either run (nor the suite, when it is
found) carries is bad input, an EvalkitError: a misspelt tag must not pass silently. A known tag
whose key was not measured in both runs is reported as not applied, as for suite-wide gates.

A key without a direction (higher_is_better None, e.g. duration_ratio: 1.0 is ideal, both ways
are wrong) is never gated, not even by `default`: it has no worse side, so it never regresses. A
gate named for such a key is reported as not applied.

The source of a gates file, shown in reports, is its path relative to the current folder when it
is inside it, else only its file name: a report must not carry local absolute paths.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .compare import CONFIDENCE, Comparison, Incomparable, MetricDelta
from .errors import EvalkitError, first_line


def display_path(path: Path) -> str:
    """`path` relative to the current folder when inside it, else its file name."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):
        return path.name or str(path)


_LIMITS = ("max_abs", "max_rel")


@dataclass(frozen=True)
class Gate:
    max_abs: float | None = None
    max_rel: float | None = None

    def allowed(self, baseline_mean: float) -> float:
        limits = [v for v in (self.max_abs, None if self.max_rel is None else self.max_rel * abs(baseline_mean))
                  if v is not None]
        return max(limits) if limits else math.inf

    def describe(self) -> str:
        parts = [f"{k} {getattr(self, k):g}" for k in _LIMITS if getattr(self, k) is not None]
        return ", ".join(parts) or "none"


TAG_SEPARATOR = "@"  # suite tags are plain names ([A-Za-z0-9._-]), so KEY@TAG splits at the last @


@dataclass(frozen=True)
class Gates:
    per_key: Mapping[str, Gate] = field(default_factory=dict)
    default: Gate | None = None
    source: str = ""
    per_tag: Mapping[tuple[str, str], Gate] = field(default_factory=dict)  # (tag, key) -> gate

    def for_key(self, key: str) -> Gate | None:
        return self.per_key.get(key, self.default)

    def for_tag(self, tag: str, key: str) -> Gate | None:
        return self.per_tag.get((tag, key))


BUILTIN = Gates({}, Gate(max_abs=0.0), "built-in: any worsening whose CI excludes zero")


@dataclass(frozen=True)
class MetricVerdict:
    key: str
    gate: Gate | None
    allowed: float  # the worsening the gate tolerates at this baseline (inf: not gated)
    significant: bool  # the CI excludes zero on the worse side
    breaks_gate: bool
    regressed: bool
    tag: str | None = None  # the suite tag, for a verdict on one tag's utterances

    @property
    def name(self) -> str:
        """KEY, or KEY@TAG as a gates file names it."""
        return self.key if self.tag is None else f"{self.key}{TAG_SEPARATOR}{self.tag}"


@dataclass(frozen=True)
class Verdict:
    status: str  # pass | regressed | incomparable
    metrics: Mapping[str, MetricVerdict]
    reasons: tuple[str, ...]  # one line each: what regressed, or why the runs are incomparable
    notes: tuple[str, ...]
    gates_source: str
    tags: Mapping[tuple[str, str], MetricVerdict] = field(default_factory=dict)  # (tag, key), every TagDelta


def parse(obj, source: str) -> Gates:
    if isinstance(obj, Mapping) and isinstance(obj.get("gates"), Mapping):
        obj = obj["gates"]
    if not isinstance(obj, Mapping):
        raise EvalkitError(f"{source}: gates must be a mapping of metric key -> {{max_abs, max_rel}}")
    per_key, per_tag, default = {}, {}, None
    for key, spec in obj.items():
        gate = _gate(spec, f"{source}: gate {key!r}")
        name, at, tag = str(key).rpartition(TAG_SEPARATOR)
        if key == "default":
            default = gate
        elif at and not (name and tag):
            raise EvalkitError(f"{source}: gate {key!r}: write KEY{TAG_SEPARATOR}TAG, e.g. cer@numbers_native")
        elif at and name == "default":
            raise EvalkitError(f"{source}: gate {key!r}: a tag gate names a metric key (default is for the "
                               "whole suite)")
        elif gate is not None and at:
            per_tag[(tag, name)] = gate
        elif gate is not None:
            per_key[str(key)] = gate
    return Gates(per_key, default, source, per_tag)


def _gate(spec, where: str) -> Gate | None:
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if not isinstance(spec, Mapping):
        raise EvalkitError(f"{where} must be a mapping like {{max_abs: 0.01, max_rel: 0.1}} or none")
    unknown = set(spec) - set(_LIMITS)
    if unknown:  # a typo must not silently disable a gate
        raise EvalkitError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use max_abs, max_rel")
    values = {}
    for k in _LIMITS:
        v = spec.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise EvalkitError(f"{where}: {k} must be a number >= 0, got {v!r}")
        values[k] = float(v)
    if not values:
        raise EvalkitError(f"{where}: give max_abs and/or max_rel (or write none to report only)")
    return Gate(**values)


def from_file(path: Path) -> Gates:
    try:
        text = Path(path).read_text(encoding="utf-8")
        obj = tomllib.loads(text) if Path(path).suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise EvalkitError(f"{path}: not a readable gates file ({first_line(exc)})") from None
    return parse(obj, display_path(path))


def from_suite(folder: Path | None) -> Gates | None:
    if folder is None:
        return None
    try:
        header = yaml.safe_load((folder / "suite.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # the suite loader reports unreadable headers; gates are then simply absent
    if not isinstance(header, Mapping) or header.get("gates") is None:
        return None
    return parse(header["gates"], f"{display_path(folder / 'suite.yaml')} gates")


def resolve(path: Path | None, suite_folder: Path | None) -> Gates:
    """A gates file wins over the suite header, which wins over the built-in default."""
    if path is not None:
        return from_file(path)
    return from_suite(suite_folder) or BUILTIN


def judge(result: Comparison | Incomparable, gates: Gates, suite_tags: Collection[str] = ()) -> Verdict:
    """The verdict of `result` under `gates`. `suite_tags`: the tags of the suite as it is now (when
    it can be found), known to tag gates beside those on the runs' rows. Raises EvalkitError for a
    tag gate whose tag neither holds."""
    if isinstance(result, Incomparable) or result.reasons:
        return Verdict("incomparable", {}, result.reasons, (), gates.source)
    known = set(result.run_tags) | set(suite_tags)
    unknown = sorted({tag for tag, _ in gates.per_tag if tag not in known})
    if unknown:
        have = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        named = ", ".join(f"{k}{TAG_SEPARATOR}{t}" for t, k in gates.per_tag if t in unknown)
        raise EvalkitError(f"{gates.source}: gate {named} names tag(s) {', '.join(unknown)} that the suite does "
                           f"not have (its tags: {have})")
    verdicts = {m.key: _judge_metric(m, None if m.higher_is_better is None else gates.for_key(m.key))
                for m in result.metrics}
    tagged = {(t.tag, t.key): _judge_metric(t.stats, None if t.stats.higher_is_better is None
                                            else gates.for_tag(t.tag, t.key), t.tag)
              for t in result.tags}
    reasons = [_regression_line(m, verdicts[m.key]) for m in result.metrics if verdicts[m.key].regressed]
    reasons += [_regression_line(t.stats, tagged[(t.tag, t.key)], t.confidence)
                for t in result.tags if tagged[(t.tag, t.key)].regressed]
    reasons += [f"new failure: {f.utterance_id}: {f.reason}" for f in result.new_failures]
    compared = {m.key for m in result.metrics}
    notes = [f"gate for {k} not applied: not measured in both runs" for k in gates.per_key if k not in compared]
    notes += [f"gate for {m.key} not applied: it has no direction (neither way is better)"
              for m in result.metrics if m.higher_is_better is None and m.key in gates.per_key]
    notes += [f"gate for {k}{TAG_SEPARATOR}{t} not applied: {k} was not measured in both runs on utterances "
              f"tagged {t}" for t, k in gates.per_tag if (t, k) not in tagged]
    notes += [f"gate for {t.key}{TAG_SEPARATOR}{t.tag} not applied: it has no direction (neither way is better)"
              for t in result.tags if t.stats.higher_is_better is None and (t.tag, t.key) in gates.per_tag]
    return Verdict("regressed" if reasons else "pass", verdicts, tuple(reasons),
                   tuple(notes) + result.notes, gates.source, tagged)


def _judge_metric(m: MetricDelta, gate: Gate | None, tag: str | None = None) -> MetricVerdict:
    allowed = gate.allowed(m.baseline_mean) if gate else math.inf
    significant = m.direction == "worse"  # never for a key without a direction
    breaks = m.higher_is_better is not None and m.worsening > allowed
    return MetricVerdict(m.key, gate, allowed, significant, breaks, significant and breaks, tag)


def _regression_line(m: MetricDelta, v: MetricVerdict, confidence: float = CONFIDENCE) -> str:
    assert v.gate is not None, "only a gated key can regress: without a gate any worsening is allowed"
    return (f"{v.name}: {m.baseline_mean:.4g} → {m.candidate_mean:.4g} ({m.delta:+.4g}, {level(confidence)} CI "
            f"[{m.ci_low:+.4g}, {m.ci_high:+.4g}]) exceeds its gate ({v.gate.describe()}: "
            f"at most {v.allowed:.4g} worse)")


def level(confidence: float) -> str:
    """A confidence level as people write it: 95%, 99.77%."""
    return f"{100 * confidence:.4g}%"
