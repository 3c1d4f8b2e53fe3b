"""Read digits, units and number symbols in Korean text aloud, as Hangul.

`read_numbers` runs on BOTH the suite text and the ASR transcript (after NFKC + casefold, before
punctuation is stripped), so "3개" and "세 개" compare equal while "삼 개" (a wrong reading of 3개)
stays an error. Text that already spells numbers in Hangul passes through unchanged, and the output
holds no convertible digits, so read(read(x)) == read(x).

Rules, tried in this order at every digit not glued to a Latin letter:
 1. ISO and dotted dates: 2024-03-15 / 2024.3.15. -> 이천이십사 년 삼월 십오 일.
 2. Middle-dot dates (6·25, 3·1절, 4·19): the first group as a cardinal, the rest digit by digit
    (multiples of ten as cardinals: 6·10 -> 육십), no spaces: 육이오, 삼일절. 6.25 with a period is
    a decimal (육 점 이오).
 3. Phone-like hyphenated digits (a group starting with 0, three or more groups, or all groups of
    3+ digits: 010-1234-5678, 1588-1234): digit by digit, 0 as 공, groups separated by spaces.
 4. Clock times h:mm[:ss] with h <= 24 and mm < 60: 3:30 -> 세 시 삼십 분 (":00" minutes dropped).
    Other colon pairs are ratios/scores: 16:9 -> 십육 대 구.
 5. Scores "3대 1" (대 followed by a bare number): 삼 대 일.
 6. Ranges a~b: a 에서 b (3~5 -> 삼에서 오, 10~40mm -> 십에서 사십 밀리미터); a bare left number
    takes the numeral system of the right side's counter (3~5개 -> 세에서 다섯 개).
 7. Everything else: [-][$₩€]digits[,ddd][.frac][천백만억조][unit|counter]
    - Sino cardinal with 만/억/조/경 grouping, one space between 만-groups as standard spelling
      does (29900 -> 이만 구천구백); 1 is silent before 십/백/천 and before a leading 만
      (10000 -> 만, 1억 -> 일억); 0 -> 영. Thousands commas are accepted.
    - Decimals: Sino integer part, 점, fraction digit by digit (3.5 -> 삼 점 오, 6.25 -> 육 점 이오).
    - Written multipliers after digits stay (50만 -> 오십만, 5천만 -> 오천만, 1만 -> 만).
    - Bare digit strings with a leading zero (007, 01012345678) are read digit by digit with 공.
    - A minus at a word start: 영하 before a temperature, 마이너스 otherwise.
    - NATIVE counters (table below) with 1..99: native attributive forms 한/두/세/네/스무
      (21살 -> 스물한 살); 1번째 -> 첫 번째. 0, 100 and above, decimals and multiplied numbers fall
      back to Sino (100명 -> 백 명).
    - 번 and 대 are native (counts: 두 번, 세 대) unless a label noun follows (2번 버스 -> 이 번
      버스, 19대 대통령 -> 십구 대 대통령): LABEL_NOUNS decides.
    - Months 1..12 are one word with the irregular 유월/시월 (6월 -> 유월, 10월 -> 시월).
    - Units: % 퍼센트, %p 퍼센트포인트, °c/℃/° 도, km/kg/m/cm/mm/g/l/ml, m2/m² 제곱미터.
    - A space separates the reading from a known counter or unit (세 개, 이천이십사 년); unknown
      Hangul after a number stays attached (1로 -> 일로). CER ignores spaces for Korean anyway.
Latin letters are left as they are (KTX, AI, USB): the suite and Whisper both write them in Latin.
Digits glued to a preceding Latin letter (mp3, a4) belong to that Latin token and are left too.

Deliberately approximate (the reading a speaker picks is not decidable from the text alone):
 - "100 and above fall back to Sino": speakers also say 백한 명 for 101명.
 - 24-hour hours read native (18시 -> 열여덟 시); broadcasters sometimes say 십팔 시.
 - 분 is always minutes (세 분 = three persons, written 3분, reads as 삼 분); 장 is a count (세 장)
   never a chapter; 대/번 as labels only before LABEL_NOUNS.
 - 3~5개 could also be said 세 개에서 다섯 개 or 서너 개; -18°c could be 마이너스 십팔 도.
 - 12·12 is said 십이십이 but rule 2 gives 십이일이; h:m with a one-digit minute is a ratio.
 - A space between digit and counter ("3 개") is NOT joined: a free syllable after a space is too
   often another word (3 시민); the digits read Sino. Spaced phone numbers (010 1234 5678) read
   as cardinals.
"""

from __future__ import annotations

import re

VERSION = "1"

# Counters that take native numerals. Multi-syllable entries win over their prefixes (시간 > 시).
NATIVE_COUNTERS = (
    "개", "명", "살", "마리", "번", "번째", "시", "시간", "잔", "병", "권", "대", "장", "벌",
    "켤레", "그루", "송이", "가지", "군데", "사람", "달", "곳", "상자", "조각", "그릇", "배",
    "통", "채", "척", "쌍", "자루", "포기", "알", "봉지", "접시", "판", "걸음", "바퀴", "끼",
    "마디", "차례", "글자", "줄", "주먹", "모금", "캔", "팩", "박스", "자리",
)
# Sino counters: the reading is the default anyway; listed so the spacing is standard and so a
# longer Sino counter beats a native prefix (개월 is not 개, 달러 is not 달, 시즌 is not 시).
SINO_COUNTERS = (
    "년", "년도", "월", "일", "일간", "주", "주년", "주일", "개월", "개국", "개년", "분", "초",
    "원", "달러", "유로", "엔", "층", "호", "호선", "호실", "회", "회차", "학년", "세", "도", "점",
    "등", "위", "차", "인분", "인", "박", "쪽", "페이지", "부", "편", "절", "시즌", "퍼센트", "프로",
    "킬로미터", "킬로그램", "미터", "센티미터", "밀리미터", "그램", "리터", "밀리리터", "킬로",
)
# After 번/대 these nouns make the number a label (Sino); otherwise 번/대 count (native).
LABEL_NOUNS = (
    "버스", "출구", "문제", "문항", "선수", "타자", "트랙", "게이트", "채널", "좌석", "창구",
    "승강장", "국도", "대통령", "국회", "회장", "총장",
)
UNITS = {
    "%p": "퍼센트포인트", "%": "퍼센트", "°c": "도", "°f": "도", "℃": "도", "°": "도",
    "km2": "제곱킬로미터", "m2": "제곱미터", "m²": "제곱미터", "㎡": "제곱미터", "cm2": "제곱센티미터",
    "m3": "세제곱미터", "km": "킬로미터", "kg": "킬로그램", "mm": "밀리미터", "cm": "센티미터",
    "ml": "밀리리터", "m": "미터", "g": "그램", "l": "리터",
}
_TEMPERATURE = frozenset({"°c", "°f", "℃", "°"})
CURRENCY_PREFIX = {"$": "달러", "₩": "원", "€": "유로"}

_DIGIT = "영일이삼사오육칠팔구"
_PHONE_DIGIT = "공일이삼사오육칠팔구"
_SMALL = ("", "십", "백", "천")
_BIG = ("", "만", "억", "조", "경")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
_NATIVE_ONES = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_MONTHS = ("", "일월", "이월", "삼월", "사월", "오월", "유월", "칠월", "팔월", "구월", "시월",
           "십일월", "십이월")


def sino(n: int) -> str:
    """Sino-Korean cardinal: 1500 -> 천오백, 10000 -> 만, 29900 -> 이만 구천구백."""
    if n == 0:
        return "영"
    if n >= 10 ** 20:  # beyond 경: nobody says these; read the digits
        return "".join(_DIGIT[int(d)] for d in str(n))
    groups, i = [], 0
    while n:
        n, g = divmod(n, 10000)
        if g:
            groups.append(_sino4(g) + _BIG[i])
        i += 1
    if groups[-1] == "일만":  # spoken 만 원, not 일만 원; inner groups keep 일 (일억 일만)
        groups[-1] = "만"
    return " ".join(reversed(groups))


def _sino4(g: int) -> str:
    out = []
    for pos in range(3, -1, -1):
        d = g // 10 ** pos % 10
        if d:
            out.append(("" if d == 1 and pos else _DIGIT[d]) + _SMALL[pos])
    return "".join(out)


def native(n: int) -> str:
    """Attributive native numeral 1..99 (한, 스무, 스물한); Sino outside that range."""
    if not 1 <= n <= 99:
        return sino(n)
    tens, ones = divmod(n, 10)
    return "스무" if n == 20 else _NATIVE_TENS[tens] + _NATIVE_ONES[ones]


def _digits(s: str, zero_gong: bool = False) -> str:
    table = _PHONE_DIGIT if zero_gong else _DIGIT
    return "".join(table[int(d)] for d in s)


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COUNTERS = frozenset(NATIVE_COUNTERS) | frozenset(SINO_COUNTERS)
_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_SUFFIX = rf"(?:{_alt(UNITS)})(?![a-z\d])|{_alt(_COUNTERS)}"
_MULT = r"(?:[천백만억]|조(?!각))+"
_GEN = (rf"(?:(?<![\w.])(?P<neg>[-−]))?(?P<cur>[$₩€])?(?P<num>{_NUM})(?:\.(?P<frac>\d+))?"
        rf"(?P<mult>{_MULT})?(?P<suf>{_SUFFIX})?")
_GEN_RE = re.compile(_GEN)
_GEN_ANON = re.sub(r"\(\?P<\w+>", "(?:", _GEN)
_LABEL_RE = re.compile(rf"\s?(?:{_alt(LABEL_NOUNS)})")
_RANGE_SPLIT = re.compile(r"\s?[~〜]\s?")

_MASTER = re.compile(rf"""(?<![a-z\d])(?:
    (?P<iso>(?P<iy>\d{{4}})-(?P<im>\d{{2}})-(?P<id>\d{{2}}))(?!\d)
  | (?P<dotdate>(?P<dy>\d{{4}})\.\s?(?P<dm>\d{{1,2}})\.\s?(?P<dd>\d{{1,2}})\.?)(?!\d)
  | (?P<middot>\d+(?:[·・ㆍ‧]\d+)+)
  | (?P<phone>(?:0\d*(?:-\d+)+|\d+(?:-\d+){{2,}}|\d{{3,}}(?:-\d{{3,}})+))(?!\d)
  | (?P<colon>(?P<c1>\d+):(?P<c2>\d+)(?::(?P<c3>\d{{2}}))?)(?!\d)
  | (?P<score>(?P<s1>\d+)대\s?(?P<s2>\d+))(?!\d|[.,:]\d|{_MULT}|{_SUFFIX})
  | (?P<range>{_GEN_ANON}{_RANGE_SPLIT.pattern}{_GEN_ANON})
  | {_GEN}
)""", re.VERBOSE)


def read_numbers(text: str) -> str:
    """Replace every number (with its unit or counter) in `text` by its Hangul reading."""
    return _MASTER.sub(_replace, text)


def _replace(m: re.Match) -> str:
    after = m.string[m.end():]
    out = _read_match(m, after)
    # Keep adjacent numbers apart ("3시30분" -> 세 시 삼십 분) so word spacing stays standard.
    return out + " " if after[:1].isdigit() else out


def _read_match(m: re.Match, after: str) -> str:
    if m["iso"] or m["dotdate"]:
        names = ("iy", "im", "id") if m["iso"] else ("dy", "dm", "dd")
        y, mo, d = (int(x) for x in m.group(*names))
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return f"{sino(y)} 년 {_MONTHS[mo]} {sino(d)} 일"
        return " ".join(_digits(g) for g in re.findall(r"\d+", m.group()))
    if m["middot"]:
        first, *rest = re.split(r"[·・ㆍ‧]", m["middot"])
        return sino(int(first)) + "".join(
            sino(int(g)) if int(g) % 10 == 0 and int(g) else _digits(g) for g in rest)
    if m["phone"]:
        return " ".join(_digits(g, zero_gong=True) for g in m["phone"].split("-"))
    if m["colon"]:
        h, mi, s = int(m["c1"]), m["c2"], m["c3"]
        if len(mi) == 2 and h <= 24 and int(mi) < 60:
            out = f"{native(h)} 시"
            if int(mi):
                out += f" {sino(int(mi))} 분"
            return out + (f" {sino(int(s))} 초" if s else "")
        return f"{sino(h)} 대 {sino(int(mi))}" + (f" 대 {sino(int(s))}" if s else "")
    if m["score"]:
        return f"{sino(int(m['s1']))} 대 {sino(int(m['s2']))}"
    if m["range"]:
        left, right = (_GEN_RE.fullmatch(p) for p in _RANGE_SPLIT.split(m["range"], maxsplit=1))
        assert left is not None and right is not None, "the range pattern is two _GEN parts around _RANGE_SPLIT"
        hint = right["suf"] if not left["suf"] and not left["cur"] else None
        return f"{_read_gen(left, after, hint)}에서 {_read_gen(right, after)}"
    return _read_gen(m, after)


def _read_gen(m: re.Match, after: str, system_of: str | None = None) -> str:
    """One number with its optional sign, currency, multiplier and unit/counter.

    `system_of`: for the bare left side of a range, the counter whose numeral system to use
    (without writing the counter itself).
    """
    raw, frac, mult = m["num"].replace(",", ""), m["frac"], m["mult"] or ""
    suf = m["suf"] or ""
    counter = system_of or suf
    n = int(raw)
    if frac is not None:
        reading = f"{sino(n)} 점 {_digits(frac)}{mult}"
    elif mult:
        reading = ("" if n == 1 and mult[0] in "천백만" else sino(n)) + mult
    elif not counter and not m["cur"] and len(raw) > 1 and raw[0] == "0":
        reading = _digits(raw, zero_gong=True)
    elif suf == "월" and 1 <= n <= 12:  # one word, irregular 유월/시월
        return _MONTHS[n]
    elif counter in NATIVE_COUNTERS and not (counter in ("번", "대") and _LABEL_RE.match(after)):
        reading = "첫" if counter == "번째" and n == 1 else native(n)
    else:
        reading = sino(n)
    if m["neg"]:
        reading = ("영하 " if suf in _TEMPERATURE else "마이너스 ") + reading
    if m["cur"]:
        reading += " " + CURRENCY_PREFIX[m["cur"]]
    if system_of or not suf:
        return reading
    return f"{reading} {UNITS.get(suf, suf)}"
