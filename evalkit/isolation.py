"""Running plug-in code so that one bad item fails alone and every failure reads as one line."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .errors import first_line
from .protocols import Metric
from .types import Score, ScoringItem

METRIC_BATCH = 16

T = TypeVar("T")
R = TypeVar("R")


def one_each(fn: Callable[[list[T]], Sequence[R]]) -> Callable[[list[T]], Sequence[R]]:
    """A plug-in's batch call, refusing an answer that does not pair one result with each input."""
    def call(items: list[T]) -> Sequence[R]:
        result = fn(items)
        if len(result) != len(items):
            name = getattr(fn, "__qualname__", fn)
            raise RuntimeError(f"{name} returned {len(result)} results for {len(items)} inputs")
        return result
    return call


def isolated(fn: Callable[[list[T]], Sequence[R]], items: list[T]) -> list[R | Exception]:
    """fn over the whole batch; if that raises, fn once per item, so one bad item fails alone."""
    try:
        return list(fn(items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    out: list[R | Exception] = []
    for item in items:
        try:
            out.extend(fn([item]))
        except Exception as exc:  # recorded per utterance, on purpose
            out.append(exc)
    return out


def compute_scores(metric: Metric, items: Sequence[ScoringItem]) -> list[Score | str]:
    """`metric.score` over `items` in batches: a Score per item, or the one-line reason it failed
    (a string, so that it crosses a process boundary whatever the exception was)."""
    out: list[Score | str] = []
    for batch in chunks(items, METRIC_BATCH):
        for outcome in isolated(one_each(metric.score), batch):
            out.append(f"{metric.name} failed: {one_line(outcome)}" if isinstance(outcome, BaseException) else outcome)
    return out


def chunks(seq: Sequence[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(seq), size):
        yield list(seq[i:i + size])


def one_line(exc: BaseException) -> str:
    """How a plug-in's failure reads in a row (its failure or a note): type and first line."""
    return first_line(exc, 200, typed=True)
