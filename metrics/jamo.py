"""Jamo error rate (JER) for Korean: edit distance over initial / medial / final jamo.

Metric card
- jer: (S + D + I) / N, where N is the number of jamo in the reference and S + D + I the
  Levenshtein distance between the reference and hypothesis jamo sequences (unit costs).
  Unbounded above, like CER: a transcript longer than the reference can exceed 1.
- What it measures: how much of each syllable the transcript got right. A Hangul syllable is
  decomposed into its initial consonant (choseong), vowel (jungseong) and optional final
  consonant (jongseong, batchim), so a wrong final (꽃 heard as 꼳, 국물 as 궁물) costs one of
  the syllable's 2-3 jamo instead of the whole syllable that syllable-level CER charges.
  CER and JER side by side separate "the model said a different syllable" from "the model
  got one sound of the syllable wrong", the typical Korean TTS front-end failure (batchim,
  tensification, nasalization).
- Direction: lower is better. Needs: the normalized reference and transcript (in the form CER
  uses). Known answers: identical text -> 0; 꽃 vs 꼳 -> 1/3; 가 vs 나 -> 1/2; 각 vs 가 -> 1/3;
  an empty transcript -> 1 (every jamo deleted); an empty reference -> NaN, as CER is undefined
  there (metrics.intelligibility scores an empty reference NaN).

Conventions (decompose)
1. Input is put in Unicode NFC first (syllables written as conjoining jamo sequences compose),
   then every whitespace character is removed: Korean CER is space-free and so is JER.
2. Each precomposed syllable U+AC00..U+D7A3 becomes 2 or 3 jamo by the Unicode arithmetic
   (s = code - 0xAC00; initial = s // 588, medial = s % 588 // 28, final = s % 28, 0 = none):
   a syllable without a final yields 2 jamo, with a final 3.
3. Jamo are written with the Hangul Compatibility Jamo letters (U+3131..U+3163: ㄱ ㅏ ㄺ ...),
   the readable, standalone forms, never the conjoining ones (U+1100..U+11FF), which fonts
   recombine into syllables on screen. A consequence: initial ㄱ and final ㄱ are the same
   letter, so an edit that only moves a consonant across the syllable boundary is cheap.
4. A complex final (ㄳ ㄵ ㄶ ㄺ ㄻ ㄼ ㄽ ㄾ ㄿ ㅀ ㅄ) is ONE jamo: it fills the one final slot.
   닭 vs 닥 is one substitution (ㄺ -> ㄱ). A tense initial (ㄲ ㄸ ㅃ ㅆ ㅉ) is one jamo.
5. A compound vowel (ㅘ ㅙ ㅚ ㅝ ㅞ ㅟ ㅢ) is ONE jamo: 과 vs 가 is one substitution.
6. Anything else is one unit per character: Latin letters, digits, other scripts. A standalone
   modern jamo is one unit too, written as its compatibility letter: the normalizer (NFKC)
   turns ㅋ into the conjoining U+110F, which is folded back to ㅋ here so both spellings agree.

Known limitations
- Orthographic, not phonetic: 좋다 transcribed 조타 costs 2 of 5 jamo although it is the
  standard pronunciation; the transcript's spelling, not the sound, is compared.
- Because of convention 3, resyllabification is cheap: 옷이 vs 오시 is 1 edit (one ㅇ deleted),
  while syllable CER charges 2. Spelling a liaison out is rare in ASR output.
- Unit costs: ㄱ -> ㄲ costs as much as ㄱ -> ㅏ; no phonetic similarity is modelled, and a
  complex final changed into one of its parts (ㄺ -> ㄹ) costs a full substitution.
- Archaic jamo and old-Hangul syllables that NFC cannot compose stay one unit per character.
- A syllable that gains a final costs an insertion: 가 vs 눅 is 3 edits of 2 jamo (JER 1.5),
  so for a single substituted syllable JER can exceed CER's 1 (it is at most 1 when the
  hypothesis syllable has no more jamo than the reference syllable).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence

_fast_distance: Callable[[str, str], int] | None
try:  # a C++ Levenshtein; installed with jiwer (which requires it), not declared by evalkit itself
    from rapidfuzz.distance import Levenshtein as _Levenshtein

    _fast_distance = _Levenshtein.distance
except ImportError:  # pragma: no cover - the pure-Python DP below is tested against it
    _fast_distance = None

SYLLABLE_FIRST, SYLLABLE_LAST = 0xAC00, 0xD7A3
_PER_INITIAL = 588  # 21 medials x 28 finals
_PER_MEDIAL = 28  # 27 finals + "no final"

# Compatibility jamo, in the order of the Unicode syllable arithmetic (The Unicode Standard, 3.12).
INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"  # 19
MEDIALS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"  # 21
FINALS = "ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ"  # 27; index 0 (no final) is not listed

# Modern conjoining jamo (what NFKC makes of a standalone compatibility letter) -> compatibility letter.
_CONJOINING_TO_COMPAT: dict[str, str] = {
    **{chr(0x1100 + i): c for i, c in enumerate(INITIALS)},
    **{chr(0x1161 + i): c for i, c in enumerate(MEDIALS)},
    **{chr(0x11A8 + i): c for i, c in enumerate(FINALS)},
}


def decompose(text: str) -> tuple[str, ...]:
    """The jamo units of `text`, spaces removed (conventions in the module docstring).

    >>> decompose("한 과")
    ('ㅎ', 'ㅏ', 'ㄴ', 'ㄱ', 'ㅘ')
    """
    units: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch.isspace():
            continue
        code = ord(ch)
        if SYLLABLE_FIRST <= code <= SYLLABLE_LAST:
            s = code - SYLLABLE_FIRST
            units.append(INITIALS[s // _PER_INITIAL])
            units.append(MEDIALS[s % _PER_INITIAL // _PER_MEDIAL])
            final = s % _PER_MEDIAL
            if final:
                units.append(FINALS[final - 1])
        else:
            units.append(_CONJOINING_TO_COMPAT.get(ch, ch))
    return tuple(units)


def jamo_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(Levenshtein distance between the jamo sequences, number of reference jamo)."""
    ref, hyp = decompose(reference), decompose(hypothesis)
    return _distance(ref, hyp), len(ref)


def jer(reference: str, hypothesis: str) -> float:
    """Jamo error rate: edits / reference jamo; NaN when the reference has no jamo."""
    edits, n = jamo_edits(reference, hypothesis)
    return edits / n if n else math.nan


def _distance(a: Sequence[str], b: Sequence[str]) -> int:
    # Every unit is one character, so the sequences join into strings without ambiguity.
    if _fast_distance is not None:
        return int(_fast_distance("".join(a), "".join(b)))
    return _distance_py(a, b)


def _distance_py(a: Sequence[str], b: Sequence[str]) -> int:
    """Plain dynamic-programming Levenshtein distance (unit costs), two rows."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
