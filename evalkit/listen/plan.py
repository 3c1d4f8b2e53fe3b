"""What one rater hears, in which order: a pure function of (test seed, rater id).

- Order: the items shuffled by a generator seeded with sha256(seed, rater). Each rater gets their
  own order (position effects average out over raters), and the same rater always gets the same
  one, so a rater who stops resumes at their first unrated item, even after a server restart.
- Slots: within an item the clips are ordered per (rater, item): in A/B which run plays as "A" is a
  coin flip, in MUSHRA the systems (hidden reference and anchor included) are shuffled.
- Attention check: ATTENTION_REPEATS items from the first half of the order come back unannounced,
  at least two items later, under new ids (the catalog's twins). The repeat must agree with the
  first rating (evalkit.listen.stats.screen): a rater who clicks without listening rarely agrees
  twice. In A/B the repeat plays the two clips on swapped sides, so always clicking "A" fails.
  Repeats need at least 3 items; a test with fewer has no attention check.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .catalog import Catalog, Item

ATTENTION_REPEATS = 2


@dataclass(frozen=True)
class Presentation:
    item: Item
    clips: tuple[str, ...]  # clip ids in the order this rater gets them: slot 0 ("A"), slot 1 ("B"), ...
    position: int  # 0-based, in the rater's plan


def _rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def repeats_for(n_items: int) -> int:
    """How many attention repeats a plan of `n_items` gets (each taken from the first half)."""
    return min(ATTENTION_REPEATS, n_items // 3)


def order(catalog: Catalog, rater: str) -> list[Item]:
    """The rater's items in order, attention repeats included."""
    rng = _rng(catalog.selection.seed, "order", rater)
    seq = list(catalog.items)
    rng.shuffle(seq)
    first_half = seq[: len(seq) // 2]
    for original in sorted(rng.sample(first_half, repeats_for(len(seq))), key=seq.index):
        at = seq.index(original)
        seq.insert(rng.randint(at + 2, len(seq)), catalog.twins[original.id])
    return seq


def _slots(catalog: Catalog, rater: str, item: Item) -> list[int]:
    """The order of `item`'s clips for this rater, as indices into item.clips."""
    n = len(item.clips)
    seed = catalog.selection.seed
    if catalog.test == "ab" and item.repeat_of is not None:
        return list(reversed(_slots(catalog, rater, catalog.index[item.repeat_of])))
    return _rng(seed, "slots", rater, item.id).sample(range(n), n)


def plan(catalog: Catalog, rater: str) -> tuple[Presentation, ...]:
    return tuple(Presentation(item, tuple(item.clips[i] for i in _slots(catalog, rater, item)), k)
                 for k, item in enumerate(order(catalog, rater)))


def presentation(catalog: Catalog, rater: str, item_id: str) -> Presentation | None:
    """How `item_id` is presented to `rater`; None when it is not in their plan (an unknown id, or
    another rater's attention repeat)."""
    return next((p for p in plan(catalog, rater) if p.item.id == item_id), None)


def next_unrated(catalog: Catalog, rater: str, rated: set[str]) -> tuple[Presentation | None, int]:
    """(the first presentation the rater has not rated, how many items their plan has)."""
    presentations = plan(catalog, rater)
    return next((p for p in presentations if p.item.id not in rated), None), len(presentations)
