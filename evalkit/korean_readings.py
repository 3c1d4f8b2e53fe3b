"""Korean CER by reading equivalence: the suite text stands for every way it may be read aloud.

A Korean sentence with numbers, symbols or Latin acronyms has more than one correct spoken form:
25명 is 스물다섯 명 or 이십오 명, -18°C is 영하 or 마이너스 십팔 도, KBS is said 케이비에스 and
transcribed either way. `readings(text)` expands the text into that set; `best(reference,
hypothesis)` scores the transcript against the closest member, so a correct reading written
differently is not an error, while a wrong one (3개 spoken 삼 개, 20살 as 이십 살, 2번 출구 as
두 번 출구, 6월 as 육월) still is. The rules and their ground in 표준어 규정, 표준 발음법 and 한글
맞춤법 (and the dictionary where the norms are silent) are in docs/korean.md; the number rules
in evalkit.korean_numbers.

How a text becomes a lattice:
1. NFKC, case folding and in-word apostrophes (evalkit.textnorm.fold), as the normalizer does.
2. Every number with its unit or counter is a slot holding its readings (korean_numbers.spans).
3. Every Latin token is a slot: as written (ktx), its Hangul letter names (케이티엑스; C 시|씨,
   R 아르|알, Z 제트|지), and for a few acronyms said as words the word (NASA 나사, TV 티브이|티비).
   A Latin token with digits (mp3, a4, 3d) adds letter names with the digits read as Sino
   cardinals, digit by digit, or (one digit) in English (엠피삼, 엠피스리).
4. A particle right after a slot whose readings end differently takes the form each reading
   needs (4.2kg으로 -> 사 점 이 킬로그램으로 | 사 점 이 킬로로): PARTICLE_PAIRS.
5. The rest is one fixed slot; every slot is cleaned like textnorm (punctuation to spaces).
The lattice's first path is exactly textnorm.normalize's string. The transcript gets a lattice
by the same rules, so KBS in the suite and 케이비에스 in the transcript agree, and so do
케이비에스 in the suite and KBS in the transcript.

Scoring (`best`): the Levenshtein distance between the two lattices, over characters with
spaces removed, by dynamic programming over (suite-lattice node, transcript-lattice node) pairs:
the closest (reading, transcript reading) pair is found without listing the readings, so the
cost grows with the lattices' size (sum of the readings' lengths), not with their number. A
sentence too long for that (more than MAX_CELLS pairs) is scored against the first readings
only, and `Choice.capped` says so. A suite may list whole-sentence alternatives (`extra`, the
utterance's `readings`); each is a lattice of its own and the closest of all wins (ties go to the
suite text, then to the first listed).

Unverified readings: when the transcript writes digits (3개), the model's own reading (세 개 or
삼 개) is hidden: the digits are read back by the same rules, so they match. `Choice.unverified`
is True when the alignment pairs a transcript character that came from digits with a suite
character that came from digits (or with an extra reading, when the suite text has digits).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice, product
from typing import Any

from . import korean_numbers, textnorm

VERSION = "1"
DEFAULT_CAP = 256  # readings() lists at most this many forms
MAX_CELLS = 1_000_000  # best(): beyond this many lattice pairs (about 0.5 s), the first readings only

# Hangul names of the Latin letters as 외래어 표기법 writes them (시, 아르, 제트), with the
# spoken variants a transcript writes for C, R and Z (씨디, 알엠, 지). Second forms are accepted,
# the first is the usual one.
LETTERS: dict[str, tuple[str, ...]] = {
    "a": ("에이",), "b": ("비",), "c": ("시", "씨"), "d": ("디",), "e": ("이",), "f": ("에프",), "g": ("지",),
    "h": ("에이치",), "i": ("아이",), "j": ("제이",), "k": ("케이",), "l": ("엘",), "m": ("엠",), "n": ("엔",),
    "o": ("오",), "p": ("피",), "q": ("큐",), "r": ("아르", "알"), "s": ("에스",), "t": ("티",), "u": ("유",),
    "v": ("브이",), "w": ("더블유",), "x": ("엑스",), "y": ("와이",), "z": ("제트", "지"),
}
# Latin tokens said as words, not letters (the dictionary's loanword spelling first). Kept short on
# purpose: a suite lists any other word in an utterance's `readings`.
WORDS: dict[str, tuple[str, ...]] = {
    "nasa": ("나사",), "nato": ("나토",), "unesco": ("유네스코",), "unicef": ("유니세프",), "opec": ("오펙",),
    "fifa": ("피파",), "asean": ("아세안",), "aids": ("에이즈",), "covid": ("코비드",), "kospi": ("코스피",),
    "kosdaq": ("코스닥",), "nasdaq": ("나스닥",), "tv": ("티브이", "티비"), "ok": ("오케이",),
    "wifi": ("와이파이",), "app": ("앱",), "iphone": ("아이폰",), "ipad": ("아이패드",), "youtube": ("유튜브",),
    "email": ("이메일",), "sns": ("에스엔에스",), "dm": ("디엠",), "ram": ("램",), "lan": ("랜",),
}
# Particles whose form follows the last sound of the word before (consonant form, vowel form,
# strict): a unit said two ways takes the particle of the way it is said (3.5kg으로 -> 삼 점 오
# 킬로그램으로 | 삼 점 오 킬로로). Not strict: after a vowel the copula's 이 may stay (킬로이라 |
# 킬로라). 으로/로: 로 after ㄹ too.
PARTICLE_PAIRS = (
    ("이에요", "예요", True), ("이며", "며", True), ("이랑", "랑", True), ("이나", "나", True), ("이야", "야", True),
    ("이라", "라", False), ("이고", "고", False), ("이면", "면", False), ("이다", "다", False), ("으로", "로", True),
    ("이", "가", True), ("을", "를", True), ("은", "는", True), ("과", "와", True),
)
_PARTICLE = re.compile("|".join(sorted({re.escape(f) for c, v, _ in PARTICLE_PAIRS for f in (c, v)},
                                       key=len, reverse=True)))
_LATIN = re.compile(r"(?<![a-z\d])[a-z\d]*[a-z][a-z\d]*(?![a-z\d])")
_RUNS = re.compile(r"[a-z]+|\d+")
_MAX_LATIN_FORMS = 24


@dataclass(frozen=True)
class Readings:
    """The normalized, space-free CER forms of a text (the usual reading first); `capped` when
    there were more than the cap and only the first were listed."""

    forms: tuple[str, ...]
    capped: bool


@dataclass(frozen=True)
class Choice:
    """The reading a transcript was scored against.

    reading: the chosen reading of the suite text, normalized, spaces as textnorm gives them.
    hypothesis: the transcript's reading the alignment used (the same for a transcript without
      digits or Latin), normalized with spaces.
    edits: character edits (space-free) between the two; ref_len: the reading's characters.
    unverified: the transcript wrote digits where the suite text has digits (module docstring).
    capped: the lattices were too large and only the first readings were compared.
    source: "text", or "readings[i]" when the i-th listed alternative was the closest.
    """

    reading: str
    hypothesis: str
    edits: int
    ref_len: int
    unverified: bool
    capped: bool
    source: str = "text"

    @property
    def cer(self) -> float:
        return self.edits / self.ref_len if self.ref_len else float("nan")


@dataclass(frozen=True)
class _Slot:
    alts: tuple[str, ...]  # readings, cleaned, spaces kept
    digits: bool  # written with digits


def slots(text: str) -> list[_Slot]:
    """The lattice of `text`: a sequence of slots, each a choice of readings."""
    s = textnorm.fold(text, "ko")
    found: list[tuple[int, int, tuple[str, ...], bool]] = [
        (sp.start, sp.end, sp.readings, True) for sp in korean_numbers.spans(s)]
    taken = [(a, b) for a, b, _, _ in found]
    for m in _LATIN.finditer(s):
        if not any(a < m.end() and m.start() < b for a, b in taken):
            found.append((m.start(), m.end(), _latin(m.group()), any(c.isdigit() for c in m.group())))
    found.sort()
    out: list[_Slot] = []
    pos = 0
    for start, end, alts, digits in found:
        particle = _PARTICLE.match(s, end) if len({_final(a) for a in alts}) > 1 else None
        if particle:
            alts, end = _with_particle(alts, particle.group()), particle.end()
        if start > pos:
            out.append(_Slot((textnorm.clean(s[pos:start], "ko"),), False))
        out.append(_Slot(tuple(dict.fromkeys(textnorm.clean(a, "ko") for a in alts)), digits))
        pos = end
    if pos < len(s):
        out.append(_Slot((textnorm.clean(s[pos:], "ko"),), False))
    return out


def _final(reading: str) -> str:
    """The last sound's class: "v" vowel, "l" ㄹ, "c" another consonant, "" not Hangul."""
    last = reading.rstrip()[-1:]
    if not "가" <= last <= "힣":
        return ""
    final = (ord(last) - 0xAC00) % 28
    return "v" if final == 0 else "l" if final == 8 else "c"


def _with_particle(alts: Sequence[str], written: str) -> tuple[str, ...]:
    """Each reading followed by the written particle, and by the form its own last sound takes."""
    consonant, vowel, strict = next((c, v, st) for c, v, st in PARTICLE_PAIRS if written in (c, v))
    out = []
    for i, a in enumerate(alts):
        final = _final(a)
        if final == "v":
            fits = [vowel] if strict else [vowel, consonant]
        elif final == "l" and consonant == "으로":
            fits = [vowel]
        else:
            fits = [consonant]
        # The first reading keeps what was written (it is textnorm's string); a reading whose last
        # sound is not Hangul (Latin as written) can only keep it.
        if i == 0 or not final:
            fits.insert(0, written)
        out += [a + f for f in fits]
    return tuple(dict.fromkeys(out))


def _latin(token: str) -> tuple[str, ...]:
    """A Latin token as written, then spelled letter by letter, then as a word (WORDS)."""
    parts = []
    for run in _RUNS.findall(token):
        if run.isdigit():
            n = int(run)
            forms = [korean_numbers.sino(n), korean_numbers._digits(run)]
            if len(run) == 1:
                forms += korean_numbers.ENGLISH_DIGITS[n].split("|")  # mp3 -> 엠피스리
            parts.append(tuple(dict.fromkeys(forms)))
        else:
            parts.append(tuple("".join(p) for p in islice(product(*(LETTERS[c] for c in run)), 8)))
    spelled = ["".join(p) for p in islice(product(*parts), _MAX_LATIN_FORMS)]
    return tuple(dict.fromkeys([token, *spelled, *WORDS.get(token, ())]))


def first_reading(text: str) -> str:
    """The lattice's first path: textnorm.normalize(text, "ko")."""
    return textnorm.collapse("".join(slot.alts[0] for slot in slots(text)))


def readings(text: str, extra: Sequence[str] = (), cap: int = DEFAULT_CAP) -> Readings:
    """The space-free CER forms of `text` and of each `extra` alternative, the usual one first,
    without repeats; at most `cap` (then `capped`)."""
    forms: dict[str, None] = {}
    capped = False
    for lattice in [slots(text), *(slots(e) for e in extra)]:
        for path in product(*(slot.alts for slot in lattice)):
            form = "".join(path).replace(" ", "")
            if form in forms:
                continue
            if len(forms) >= cap:
                capped = True
                break
            forms[form] = None
    return Readings(tuple(forms), capped)


def best(reference: str, hypothesis: str, extra: Sequence[str] = ()) -> Choice:
    """The reading of `reference` (or of one `extra` alternative) closest to `hypothesis`, both
    given as written (not normalized)."""
    has_digits = any(c.isdigit() for c in unicodedata.normalize("NFKC", reference))
    hyp = _Graph(slots(hypothesis))
    refs = [("text", _Graph(slots(reference)))]
    refs += [(f"readings[{i}]", _Graph(slots(e), all_digits=has_digits)) for i, e in enumerate(extra)]
    choice: Choice | None = None
    for source, ref in refs:
        c = _align(ref, hyp, source)
        if choice is None or c.edits < choice.edits:
            choice = c
    assert choice is not None
    return choice


class _Graph:
    """A lattice as a graph of characters: node 0 is the start, every other node one character
    with the nodes that may precede it; `finals` are the nodes a path may end on."""

    def __init__(self, lattice: list[_Slot], all_digits: bool = False) -> None:
        self.slots = lattice
        self.all_digits = all_digits
        self.labels = [""]
        self.preds: list[tuple[int, ...]] = [()]
        self.digit = [False]
        self.origin = [(-1, -1)]
        frontier: tuple[int, ...] = (0,)
        for si, slot in enumerate(lattice):
            ends: list[int] = []
            for ai, alt in enumerate(slot.alts):
                chars = alt.replace(" ", "")
                if not chars:
                    ends.extend(frontier)
                    continue
                prev = frontier
                for ch in chars:
                    self.labels.append(ch)
                    self.preds.append(prev)
                    self.digit.append(slot.digits or all_digits)
                    self.origin.append((si, ai))
                    prev = (len(self.labels) - 1,)
                ends.append(prev[0])
            frontier = tuple(dict.fromkeys(ends))
        self.finals = frontier
        self.linear = all(len(slot.alts) == 1 for slot in lattice)

    def first(self) -> _Graph:
        return _Graph([_Slot(slot.alts[:1], slot.digits) for slot in self.slots], self.all_digits)

    def text(self, nodes: Sequence[int]) -> str:
        """The reading that passes through `nodes` (one path), normalized with spaces."""
        chosen: dict[int, int] = {}
        for n in nodes:
            si, ai = self.origin[n]
            chosen[si] = ai
        parts = []
        for si, slot in enumerate(self.slots):
            if si in chosen:
                parts.append(slot.alts[chosen[si]])
            else:  # a slot the path skipped: it read as nothing
                parts.append(next((a for a in slot.alts if not a.replace(" ", "")), ""))
        return textnorm.collapse("".join(parts))


def _align(ref: _Graph, hyp: _Graph, source: str) -> Choice:
    capped = False
    if len(ref.labels) * len(hyp.labels) > MAX_CELLS and not (ref.linear and hyp.linear):
        ref, hyp, capped = ref.first(), hyp.first(), True
    pairs = _linear_pairs(ref, hyp) if ref.linear and hyp.linear else None
    if pairs is None:
        pairs = _lattice_pairs(ref, hyp)
    edits, ref_nodes, hyp_nodes, matched = pairs
    unverified = any(ref.digit[i] and hyp.digit[j] for i, j in matched)
    return Choice(ref.text(ref_nodes), hyp.text(hyp_nodes), edits, len(ref_nodes), unverified, capped, source)


_Pairs = tuple[int, list[int], list[int], list[tuple[int, int]]]


def _linear_pairs(ref: _Graph, hyp: _Graph) -> _Pairs | None:
    """Both lattices are single strings: rapidfuzz's Levenshtein (C++) with its opcodes."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:  # pragma: no cover - jiwer requires rapidfuzz; the DP below is the fallback
        return None
    r, h = "".join(ref.labels), "".join(hyp.labels)
    matched: list[tuple[int, int]] = []
    for op in Levenshtein.opcodes(r, h):
        if op.tag in ("equal", "replace"):  # a replace block pairs its characters one to one
            matched += zip(range(op.src_start + 1, op.src_end + 1), range(op.dest_start + 1, op.dest_end + 1),
                           strict=False)
    return int(Levenshtein.distance(r, h)), list(range(1, len(ref.labels))), list(range(1, len(hyp.labels))), matched


def _lattice_pairs(ref: _Graph, hyp: _Graph) -> _Pairs:
    """Edit distance between two lattices: D[i][j] is the fewest edits that turn some path of
    `ref` ending at node i into some path of `hyp` ending at node j. Nodes are in topological
    order (every predecessor was made first), so one pass fills the table; ties prefer a
    match or substitution, then the earlier reading."""
    n_ref, n_hyp = len(ref.labels), len(hyp.labels)
    inf = 1 << 30
    dist = [[inf] * n_hyp for _ in range(n_ref)]
    back: list[list[Any]] = [[None] * n_hyp for _ in range(n_ref)]
    hyp_preds, hyp_labels = hyp.preds, hyp.labels
    row = dist[0]
    row[0] = 0
    for j in range(1, n_hyp):
        q = min(hyp_preds[j], key=row.__getitem__)
        row[j], back[0][j] = row[q] + 1, (0, q)
    for i in range(1, n_ref):
        label, preds = ref.labels[i], ref.preds[i]
        prev_rows = [(p, dist[p]) for p in preds]
        row, brow = dist[i], back[i]
        for j in range(n_hyp):
            best, arg = inf, None
            if j:
                cost = 0 if label == hyp_labels[j] else 1
                for p, prow in prev_rows:
                    for q in hyp_preds[j]:
                        if prow[q] + cost < best:
                            best, arg = prow[q] + cost, (p, q)
            for p, prow in prev_rows:
                if prow[j] + 1 < best:
                    best, arg = prow[j] + 1, (p, j)
            if j:
                for q in hyp_preds[j]:
                    if row[q] + 1 < best:
                        best, arg = row[q] + 1, (i, q)
            row[j], brow[j] = best, arg
    end = min(((i, j) for i in ref.finals for j in hyp.finals), key=lambda ij: dist[ij[0]][ij[1]])
    edits = dist[end[0]][end[1]]
    ref_nodes: list[int] = []
    hyp_nodes: list[int] = []
    matched: list[tuple[int, int]] = []
    i, j = end
    while (i, j) != (0, 0):
        p, q = back[i][j]
        if p != i:
            ref_nodes.append(i)
        if q != j:
            hyp_nodes.append(j)
        if p != i and q != j:
            matched.append((i, j))
        i, j = p, q
    return edits, ref_nodes[::-1], hyp_nodes[::-1], matched
