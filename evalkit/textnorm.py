"""Text normalization applied identically to the suite text and the ASR transcript.

Rules (bump VERSION whenever one changes: it is part of every run's provenance):
1. Unicode NFKC: composes Hangul syllables (NFC) and folds full-width and compatibility forms
   (ＡＢＣ -> ABC, ㎞ -> km).
2. Case folding.
   Korean: digits, units and number symbols are read aloud as Hangul with the counter rules
   of evalkit.korean_numbers (3개 -> 세 개, 2024년 -> 이천이십사 년), each in its usual
   reading; Korean CER itself is taken against the closest of ALL standard readings of the
   suite text (evalkit.korean_readings, docs/korean.md), of which this form is the first.
   English: numbers, money, times, dates, units and common abbreviations are read aloud as
   words by evalkit.english_numbers (3 -> three, $12.50 -> twelve dollars fifty, Dr. ->
   doctor). Both run before punctuation goes, so a correct reading written differently is not
   an error and a wrong one still is.
3. Thousands separators inside numbers are dropped (1,500 -> 1500): ASR writes both.
4. Apostrophes inside words are dropped (don't -> dont; for Korean before the numbers are
   read); every other punctuation mark or symbol becomes a space. Digits, letters of every
   script and spaces survive.
5. English only: diacritics are removed (café -> cafe), as Whisper's own English normalizer
   does; ASR spells loanwords either way. Other languages keep them (Hangul is never decomposed).
6. Whitespace collapses to single spaces.

For CER, languages written without reliable word spacing (Korean, Japanese, Chinese, Thai)
are compared with all spaces removed: Korean spacing is inconsistent in writing and in ASR
output, so a spacing difference is not a pronunciation error. Other languages keep the
spaces, as jiwer's CER does.
"""

from __future__ import annotations

import re
import unicodedata

from . import english_numbers, korean_numbers

# The number readers are part of the normalizer: their versions are part of this one.
VERSION = f"4+ko{korean_numbers.VERSION}+en{english_numbers.VERSION}"

# The languages a suite may declare: those Whisper transcribes (its 100 codes in its token
# order, from whisper.tokenizer.LANGUAGES), which the rules above normalize (digits are read aloud only for
# ko and en; elsewhere they are kept as written, on both sides alike).
WHISPER_LANGUAGES = tuple("""
en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi
ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd
gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue""".split())
LANGUAGES = frozenset(WHISPER_LANGUAGES)

SPACE_FREE_CER = frozenset({"ko", "ja", "zh", "th"})
FOLD_DIACRITICS = frozenset({"en"})

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_SPACES = re.compile(r"\s+")


def normalize(text: str, language: str) -> str:
    s = fold(text, language)
    if language == "ko":
        s = korean_numbers.read_numbers(s)
    elif language == "en":
        s = english_numbers.read_numbers(s)
    return collapse(clean(s, language))


def fold(text: str, language: str) -> str:
    """Rules 1-2: NFKC and case folding; for Korean also rule 4's apostrophes, before the numbers
    are read, so that evalkit.korean_readings, which cleans each piece of a sentence apart, gives
    the same string as this normalizer."""
    s = unicodedata.normalize("NFKC", text).casefold()
    return _APOSTROPHE.sub("", s) if language == "ko" else s


def clean(s: str, language: str) -> str:
    """Rules 3-5 on text whose numbers are already read: separators, apostrophes, diacritics
    (English), punctuation and symbols to spaces. Spaces are kept as they are (see `collapse`)."""
    s = _THOUSANDS.sub("", s)
    s = _APOSTROPHE.sub("", s)
    if language in FOLD_DIACRITICS:
        s = unicodedata.normalize("NFC", "".join(
            ch for ch in unicodedata.normalize("NFD", s) if unicodedata.category(ch) != "Mn"))
    return "".join(ch if _keep(ch) else " " for ch in s)


def collapse(s: str) -> str:
    """Rule 6: runs of whitespace become one space, none at either end."""
    return _SPACES.sub(" ", s).strip()


def cer_form(normalized: str, language: str) -> str:
    """The string CER is computed on."""
    return normalized.replace(" ", "") if language in SPACE_FREE_CER else normalized


def _keep(ch: str) -> bool:
    cat = unicodedata.category(ch)
    # Letters, marks (combining jamo, accents) and numbers stay; punctuation and symbols go.
    return cat[0] in "LMN" or ch == " "
