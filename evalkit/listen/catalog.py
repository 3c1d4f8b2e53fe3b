"""What a listening test rates: systems, clips and items, behind opaque ids.

Two steps, because the database is chosen between them:
- `select(runs, test, ...)`: which systems (the runs, plus the hidden anchors with --anchors) and
  which utterances take part, and the digest of that choice. The digest names the default
  database and is written into it, so the same command resumes the same test and a database is
  never fed a different test (the orders raters already follow would change under them).
- `build(selection, secret, anchor_dir)`: the clips and items with their ids. Every id a rater can
  see (clip URLs, item ids in forms) is an HMAC of the database's secret: nothing in a page or a
  URL names a run or a model, and the ids cannot be recomputed from run ids by a curious rater.

Items per test:
- mos: one item per (system, utterance): a single clip rated 1-5 (ACR);
- ab: one item per utterance both runs have (same text): two clips, a preference or none;
- mushra: one item per utterance every system has: all systems' clips, 0-100 each.
Every item has a twin with its own ids (`Catalog.twins`): the attention repeat (evalkit.listen.plan).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import runs as runs_mod
from ..errors import EvalkitError
from ..runs import LoadedRun
from . import anchors

TESTS = ("mos", "ab", "mushra")
REFERENCE, DEGRADED = "reference", "degraded"  # the anchors' system keys (a run's key is 32 hex digits)


@dataclass(frozen=True)
class System:
    """One source of clips: a run (key = its evalkit run id, what the ratings CSV calls `run`) or
    a hidden anchor. `label` is for engineers (CSV, console, MLflow), never for raters."""

    key: str
    kind: str  # run | reference | degraded
    label: str
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class Selection:
    test: str
    seed: int
    systems: tuple[System, ...]
    utterances: tuple[tuple[str, str], ...]  # (utterance id, text), in suite order
    # (system key, utterance id) -> the wav; for the degraded anchor, the clip it is made from.
    sources: Mapping[tuple[str, str], Path]
    notes: tuple[str, ...] = ()  # what was left out and why, for the console

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """What the test is, as the database records it (evalkit.listen.store.Store.claim)."""
        return {"format": 1, "test": self.test, "seed": self.seed,
                "systems": [{"key": s.key, "kind": s.kind, "label": s.label, "mlflow_run_id": s.mlflow_run_id,
                             "tracking_uri": s.tracking_uri} for s in self.systems],
                "utterances": [u for u, _ in self.utterances]}


@dataclass(frozen=True)
class Clip:
    id: str
    system: str  # System.key
    utterance_id: str
    path: Path


@dataclass(frozen=True)
class Item:
    id: str
    utterance_id: str
    text: str
    clips: tuple[str, ...]  # clip ids in the order of Selection.systems (a rater gets them shuffled)
    repeat_of: str | None = None  # set on an attention repeat: the item it must agree with


@dataclass(frozen=True)
class Catalog:
    selection: Selection
    clips: Mapping[str, Clip]
    items: tuple[Item, ...]  # what is rated, twins not included
    twins: Mapping[str, Item]  # item id -> its attention repeat
    index: Mapping[str, Item]  # every item by id, twins included

    @property
    def test(self) -> str:
        return self.selection.test

    def system(self, key: str) -> System:
        return next(s for s in self.selection.systems if s.key == key)

    def item(self, item_id: str) -> Item | None:
        """Any item by id, twins included; None for an id this test does not have."""
        return self.index.get(item_id)


def select(runs: Sequence[LoadedRun], test: str, *, anchors_: bool = False, limit: int | None = None,
           seed: int = 0) -> Selection:
    """The systems and utterances of a test over `runs`; EvalkitError (one line) when they cannot
    make one. Rows that failed or have no clip are left out, with a note."""
    if test not in TESTS:
        raise EvalkitError(f"--test must be one of {', '.join(TESTS)} (got {test!r})")
    if test == "ab" and len(runs) != 2:
        raise EvalkitError(f"--test ab compares exactly two runs (got {len(runs)})")
    if test == "mushra" and len(runs) < 2:
        raise EvalkitError(f"--test mushra compares two runs or more (got {len(runs)})")
    if anchors_ and test == "ab":
        raise EvalkitError("--anchors is for --test mos and mushra: an A/B test compares exactly the two runs")
    if limit is not None and limit < 1:
        raise EvalkitError(f"--limit must be at least 1 (got {limit})")
    seen: dict[str, str] = {}
    for r in runs:
        if r.summary.run_id in seen:
            raise EvalkitError(f"{seen[r.summary.run_id]} and {r.source} are the same run "
                               f"({r.summary.run_id}): name each run once")
        seen[r.summary.run_id] = r.source

    notes: list[str] = []
    systems = [System(r.summary.run_id, "run", r.label, r.mlflow_run_id, runs_mod.recorded_uri(r)) for r in runs]
    sources: dict[tuple[str, str], Path] = {}
    texts: dict[str, str] = {}
    order: list[str] = []
    clashes: set[str] = set()
    for r, system in zip(runs, systems, strict=True):
        missing = 0
        for row in r.rows:
            path = r.audio_path(row) if row.failure is None else None
            if path is None:
                missing += 1
                continue
            sources[(system.key, row.utterance_id)] = path
            if row.utterance_id not in texts:
                texts[row.utterance_id] = row.text
                order.append(row.utterance_id)
            elif texts[row.utterance_id] != row.text:
                clashes.add(row.utterance_id)
        if missing:
            notes.append(f"{r.label}: {missing} utterance(s) failed or have no clip; they are not rated")

    if test == "mos":
        ids = [u for u in order if u not in clashes]
    else:  # every system must have the utterance, with the same sentence
        ids = [u for u in order if u not in clashes and all((s.key, u) in sources for s in systems)]
        if len(ids) < len(order):
            notes.append(f"{len(order) - len(ids)} utterance(s) are not in every run with the same text; "
                         "they are not rated")
    if test == "mos" and clashes:
        notes.append(f"{len(clashes)} utterance id(s) have different texts in different runs; they are not rated")
    if limit is not None and limit < len(ids):
        keep = set(random.Random(seed).sample(ids, limit))  # spread over the suite, not its first tag
        ids = [u for u in ids if u in keep]
    if not ids:
        raise EvalkitError("no utterance has a clip to rate in " + ", ".join(r.source for r in runs))

    if anchors_:
        systems += _anchors(runs[0], ids, systems[0], sources, notes)
    wanted = set(ids)
    return Selection(test, seed, tuple(systems), tuple((u, texts[u]) for u in ids),
                     {k: v for k, v in sources.items() if k[1] in wanted}, tuple(notes))


def _anchors(first: LoadedRun, ids: list[str], first_system: System, sources: dict[tuple[str, str], Path],
             notes: list[str]) -> list[System]:
    """The reference (when the suite's or a --reference-run's audio covers every utterance) and the
    degraded copy of the reference, else of the first run's clip."""
    refs = runs_mod.reference_paths(first.summary, ids)
    out = []
    if refs and all(u in refs for u in ids):
        out.append(System(REFERENCE, "reference", "hidden reference (the suite's reference audio)"))
        for u in ids:
            sources[(REFERENCE, u)] = refs[u]
    else:
        have = sum(u in refs for u in ids)
        notes.append(f"no hidden reference: reference audio covers {have} of {len(ids)} utterances; "
                     "the degraded anchor is made from the first run's clips")
        refs = {}
    out.append(System(DEGRADED, "degraded",
                      f"degraded anchor ({anchors.LOWPASS_HZ:g} Hz low-pass, noise at {anchors.SNR_DB:g} dB SNR, "
                      f"of the {'reference' if refs else first_system.label})"))
    for u in ids:
        source = refs.get(u) or sources.get((first_system.key, u))
        if source is not None:
            sources[(DEGRADED, u)] = source
    return out


def opaque(secret: str, *parts: str) -> str:
    """An id a rater sees: keyed by the database's secret, so it says nothing about what it names."""
    return hmac.new(secret.encode(), "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:20]


def build(selection: Selection, secret: str, anchor_dir: Path) -> Catalog:
    """The clips and items of `selection`; degraded anchors are written into `anchor_dir` (once)."""
    clips: dict[str, Clip] = {}
    twin_clips: dict[str, str] = {}  # clip id -> its twin's id (the same file under another name)
    by_pair: dict[tuple[str, str], str] = {}
    for system in selection.systems:
        for uid, _ in selection.utterances:
            source = selection.sources.get((system.key, uid))
            if source is None:
                continue
            path = anchors.degraded_copy(source, anchor_dir) if system.kind == "degraded" else source
            clip = Clip(opaque(secret, "clip", system.key, uid), system.key, uid, path)
            twin = Clip(opaque(secret, "clip-again", system.key, uid), system.key, uid, path)
            clips[clip.id], clips[twin.id], twin_clips[clip.id] = clip, twin, twin.id
            by_pair[(system.key, uid)] = clip.id
    items: list[Item] = []
    for uid, text in selection.utterances:
        if selection.test == "mos":
            items += [Item(opaque(secret, "item", s.key, uid), uid, text, (by_pair[(s.key, uid)],))
                      for s in selection.systems if (s.key, uid) in by_pair]
        else:
            items.append(Item(opaque(secret, "item", uid), uid, text,
                              tuple(by_pair[(s.key, uid)] for s in selection.systems)))
    twins = {i.id: Item(opaque(secret, "again", i.id), i.utterance_id, i.text,
                        tuple(twin_clips[c] for c in i.clips), repeat_of=i.id) for i in items}
    index = {i.id: i for i in [*items, *twins.values()]}
    return Catalog(selection, clips, tuple(items), twins, index)
