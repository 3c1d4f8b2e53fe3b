"""Metrics as a run gets them: constructed with their options, seen through the declared
contract (evalkit.protocols.Metric), and checked, so that a metric's values can never overwrite
evalkit's own columns or another metric's values.

Options come from the command line as text (`--metric-option f0.f0_method=dio`, recorded as
such in run.json) and are converted to the type of the constructor parameter's default: int,
float, bool (true/false, yes/no, on/off, 1/0) or str. Every refusal is one EvalkitError line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from .errors import EvalkitError, MissingExtra, first_line
from .protocols import Metric, declared
from .stages import SYNTHESIS_KEYS, TRANSCRIPT_TEXTS
from .types import RESERVED_COLUMNS

# Row columns no metric may write: the row's own, the transcription stage's texts, the synthesis facts.
RESERVED = (*RESERVED_COLUMNS, *TRANSCRIPT_TEXTS, *SYNTHESIS_KEYS)

Options = Mapping[str, Mapping[str, str]]  # metric name -> {constructor keyword: value as text}

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_options(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """`NAME.KEY=VALUE` strings (repeatable; a later one wins) as {name: {key: value}}. NAME is a
    metric as named in --metrics (an entry point name or pkg.mod:Name), KEY a constructor keyword."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        target, sep, value = spec.partition("=")
        name, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not name or not key.isidentifier():
            raise EvalkitError(f"--metric-option expects NAME.KEY=VALUE (as f0.f0_method=dio), got {spec!r}")
        out.setdefault(name, {})[key] = value.strip()
    return out


def construct(name: str, cls: type, options: Mapping[str, str]) -> Metric:
    """`cls` constructed with `options`, each converted to its parameter's type, as a Metric."""
    if not options:
        return declared(cls())
    params = inspect.signature(cls).parameters
    settable = {k: p for k, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, object] = {}
    for key, text in options.items():
        where = f"--metric-option {name}.{key}"
        if key in settable:
            kwargs[key] = _convert(text, settable[key].default, where)
        elif open_ended:
            kwargs[key] = text
        else:
            raise EvalkitError(f"{where}: metric {name} has no option {key!r} "
                               f"(its options: {', '.join(settable) or 'none'})")
    try:
        metric = cls(**kwargs)
    except MissingExtra:  # says what to install; not a refused option
        raise
    except Exception as exc:  # the metric's own validation, whatever it raises
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise EvalkitError(f"--metric-option: metric {name} refused {given}: {first_line(exc, 200)}") from None
    return declared(metric)


def _convert(text: str, default: object, where: str) -> object:
    if isinstance(default, bool):  # before int: a bool is an int
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise EvalkitError(f"{where}: expects true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise EvalkitError(f"{where}: expects an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise EvalkitError(f"{where}: expects a number, got {text!r}") from None
    if isinstance(default, str) or default is None or default is inspect.Parameter.empty:
        return text
    raise EvalkitError(f"{where}: cannot be set from the command line (its default is a {type(default).__name__})")


def checked(loaded: Sequence[tuple[str, Metric]], options: Options) -> list[Metric]:
    """The loaded (name, metric) pairs' metrics, once every option names one of them and no two
    of them, nor a metric and evalkit's own row columns, share a key (values or alignment texts)."""
    names = [n for n, _ in loaded]
    for name, keys in options.items():
        if name not in names:
            raise EvalkitError(f"--metric-option {name}.{next(iter(keys), 'KEY')}: {name} is not a metric of "
                               f"this run (its metrics: {', '.join(names) or 'none'}; choose them with --metrics)")
    owner: dict[str, str] = {}
    seen: set[str] = set()
    for _, m in loaded:
        _check_declaration(m)
        if m.name in seen:
            raise EvalkitError(f"two loaded metrics are both named {m.name!r}: load one of them")
        seen.add(m.name)
        for key in (*m.higher_is_better, *m.alignments):
            if key in RESERVED:
                raise EvalkitError(f"metric {m.name} writes {key!r}, a column evalkit reserves "
                                   f"({', '.join(RESERVED)}): rename that key in the metric")
            if key in owner and owner[key] != m.name:
                raise EvalkitError(f"metrics {owner[key]} and {m.name} both write {key!r}: "
                                   "their values would overwrite each other; run them separately")
            owner[key] = m.name
    return [m for _, m in loaded]


def _check_declaration(m: Metric) -> None:
    """What the core relies on: `counts` and `headline` name value keys, `corpus` names counts."""
    keys = set(m.higher_is_better)
    wrong = [f"counts names {k!r} (not a value key)" for k in m.counts if k not in keys]
    if m.headline is not None and m.headline not in keys:
        wrong.append(f"headline names {m.headline!r} (not a value key)")
    wrong += [f"corpus {rate!r} names {k!r} (not a count)" for rate, (num, den) in m.corpus.items()
              for k in (*num, den) if k not in m.counts]
    if wrong:
        raise EvalkitError(f"metric {m.name} declares what the core cannot use: {'; '.join(wrong)}")
