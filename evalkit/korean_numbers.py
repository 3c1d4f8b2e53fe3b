"""Read digits, units and number symbols in Korean text aloud, as Hangul: every standard reading.

`spans(text)` finds each number (with its unit or counter) in NFKC + casefolded text, punctuation
still there, and gives the set of its valid spoken readings, the usual one first.
`read_numbers(text)` replaces each by that first reading: it is what textnorm shows as
`text_norm` / `transcript_norm`. evalkit.korean_readings builds the reading lattice of a whole
sentence from `spans` (plus Latin acronyms) and scores CER against the closest reading, so a
second standard reading (25명: 이십오 명 beside 스물다섯 명) is not an error while a wrong one
(3개 spoken 삼 개) still is. docs/korean.md lists every rule with its ground in the standard
(표준어 규정, 표준 발음법, 한글 맞춤법) and the deliberate choices.

Rules, tried in this order at every digit not glued to a Latin letter ("a|b" lists the accepted
readings, the first is read_numbers' one):
 1. ISO and dotted dates: 2024-03-15 / 2024.3.15. -> 이천이십사 년 삼월 십오 일.
 2. Named dates (6·25, 3·1절, 4·19, 3.1절, 8.15 광복절): the first group a cardinal, the rest
    digit by digit (multiples of ten as cardinals: 6·10 -> 육십), no spaces: 육이오, 삼일절;
    12·12 is the conventional 십이십이. A period reads so only before 절 or an event word (사태,
    운동, 전쟁, ...); elsewhere 6.25 is a decimal (육 점 이오).
 3. Phone numbers: hyphenated digit groups (a group starting with 0, three or more groups, or all
    groups of 3+ digits: 010-1234-5678, 1588-1234) and 0NN NNNN NNNN with spaces: digit by digit,
    0 as 공|영 (the same in the whole number), a pause or 에 between groups (공일공에 일이삼사).
 4. Fractions 1/3 -> 삼분의 일; basement floors B2층 -> 지하 이|비 이|비 투 (층).
 5. Clock times h:mm[:ss] with h <= 24 and mm < 60: 3:30 -> 세 시 삼십 분|세 시 반 (":00"
    dropped; hours as rule 8's 시). Other colon pairs are ratios/scores: 16:9 -> 십육 대 구.
 6. Scores "3대 1" (대 followed by a bare number): 삼 대 일.
 7. Ranges a~b: with a native counter 2~3명 -> 두세 명|두 명에서 세 명|둘에서 세 명 (the
    approximate numerals 한두, 두세, 서너, 네댓|너덧, 대여섯, 예닐곱, 일고여덟, 여덟아홉|엳아홉
    for neighbours); with a Sino counter or unit 10~40mm -> 십에서 사십 밀리미터|십 밀리미터에서
    사십 밀리미터 (2~3일 also 이삼 일, 40~50대 사오십 대); bare 3~5 -> 삼에서 오; 9시~11시 ->
    아홉 시에서 열한 시.
 8. Everything else: [-][$₩€]digits[,ddd][.frac][천백만억조][unit|counter], the counter glued or
    after ONE space when only particles follow it ("3 개" = "3개"; "3 시민" is not a counter).
    - Sino cardinal with 만/억/조/경 grouping, one space between 만-groups (29900 -> 이만
      구천구백); 1 is silent before 십/백/천 and a leading 만 may take it or not (10,320 ->
      만 삼백이십|일만 삼백이십; 1만 -> 만|일만); 1억 -> 일억; 0 -> 영.
    - Decimals: Sino integer part, 점, fraction digit by digit (3.5 -> 삼 점 오).
    - Written multipliers after digits stay (50만 -> 오십만, 5천만 -> 오천만).
    - Bare digit strings (no counter, unit or currency): with a leading zero (007), a public
      service number (119) or after a code word (인증번호 4827, 끝자리가 7702) digit by digit,
      0 as 공|영; after a plain 번호 digit by digit|cardinal (방 번호 302); otherwise a cardinal,
      and 1..99 not followed by a word may be counted natively (1, 2, 3 -> 일|하나, 이|둘, ...).
    - A minus at a word start: 영하|마이너스 before a temperature, 마이너스 otherwise; °C/℃ may
      add the scale (섭씨 이십오 도).
    - 제 before the number makes an ordinal, always Sino: 제1장 -> 제일 장, 제3권 -> 제삼 권.
    - NATIVE counters (table below) with 1..99: the native attributive forms 한/두/세/네/스무
      (21살 -> 스물한 살), 1번째 -> 첫 번째, 3달 -> 세 달|석 달. The counters in DUAL_COUNTERS
      also take Sino from a threshold (25명 -> 스물다섯 명|이십오 명 from 20; 5배 -> 다섯 배|오 배
      from 5; never 살: 20살 is 스무 살 only); 편/부 name a part in Sino (2편 -> 두 편|이 편)
      unless a quantity word follows (10편 넘게 -> 열 편). 0 is 영; 100 and above are Sino, or
      Sino hundreds + native rest (101명 -> 백일 명|백한 명).
    - 시 (the hour): 1..12 native only (세 시); 13..24 native|Sino (열여덟 시|십팔 시), and 24시
      before a business (24시 편의점) Sino only (이십사 시); 0시 -> 영 시.
    - 번 and 대 count (두 번, 세 대) unless they label: a LABEL_NOUNS word follows (2번 출구 ->
      이 번 출구), or for 번 a LABEL_CUES word precedes (정답은 3번 -> 삼 번). 10대..90대 is an
      age group or a rank (이십 대) unless a vehicle or machine precedes (차 20대 -> 스무 대).
      A label of 100 or more (472번 버스, 302호) may be read digit by digit too.
    - Months 1..12 are one word with the irregular 유월/시월 (6월 -> 유월, 10월 -> 시월).
    - Units: % 퍼센트|프로, %p 퍼센트포인트|포인트, °c/℃/° 도, km 킬로미터|킬로, kg
      킬로그램|킬로, cm 센티미터|센티, mm 밀리미터|밀리, ml 밀리리터|밀리, m2/m² 제곱미터|평방미터,
      gb 기가바이트|기가, and the others in UNITS.
    - A space separates the reading from a known counter or unit (세 개); unknown Hangul after a
      number stays attached (1로 -> 일로). CER ignores spaces for Korean anyway.
Latin letters are left as they are here (KTX, AI); korean_readings adds their Hangul letter names.
Digits glued to a Latin letter (mp3, a4, 3d) belong to that Latin token and are left too.

Deliberately not decided from the text (one reading, or a suite lists `readings`): 분 is always
minutes (세 분 = three persons reads 삼 분); 장/권 without 제 count (세 장), never a chapter; a 번
or 대 with no cue counts; 3~5일 as 삼 일부터 오 일까지 is not accepted. The module is pure:
read(read(x)) == read(x), and its output holds no digit it could read. A particle after a number
whose readings end differently (킬로그램으로|킬로로) is korean_readings' business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

VERSION = "2"

# Counters that take native numerals. Multi-syllable entries win over their prefixes (시간 > 시).
NATIVE_COUNTERS = (
    "개", "명", "살", "마리", "번", "번째", "시", "시간", "잔", "병", "권", "대", "장", "벌",
    "켤레", "그루", "송이", "가지", "군데", "사람", "달", "곳", "상자", "조각", "그릇", "배",
    "통", "채", "척", "쌍", "자루", "포기", "알", "봉지", "접시", "판", "걸음", "바퀴", "끼",
    "마디", "차례", "글자", "줄", "주먹", "모금", "캔", "팩", "박스", "자리", "편", "부",
)
# Native counters whose Sino reading names a part (a sequel 이 편, a programme's 삼 부) where the
# native one counts (두 편, 세 부): both, unless a word of quantity follows (10편 넘게 -> 열 편).
SINO_TOO = frozenset({"편", "부"})
QUANTITY_WORDS = ("넘게", "이상", "이하", "씩", "정도", "쯤", "가량", "밖에", "이나", "남짓", "나", "씩이나")
# Native counters that also take Sino numerals from a number up: counts of people, things,
# animals, books, sheets, vehicles and hours from 20 (이십오 명, 이십사 시간), the multiplier 배
# from 5 (오 배 빠른). Not 살 (20살 is 스무 살; 이십 세 is written with 세), not 번째/달/번
# (스무 번째, 스무 번).
_COUNTS = ("명", "개", "마리", "권", "장", "대", "시간", "병", "잔", "그루", "송이", "가지", "곳", "군데")
DUAL_COUNTERS = {**dict.fromkeys(_COUNTS, 20), "배": 5}
# Sino counters: the reading is the default anyway; listed so the spacing is standard and so a
# longer Sino counter beats a native prefix (개월 is not 개, 달러 is not 달, 시즌 is not 시).
SINO_COUNTERS = (
    "년", "년도", "월", "일", "일간", "주", "주년", "주일", "개월", "개국", "개년", "분", "초",
    "원", "달러", "유로", "엔", "층", "호", "호선", "호실", "회", "회차", "학년", "세", "도", "점",
    "등", "위", "차", "인분", "박", "쪽", "페이지", "절", "시즌", "퍼센트", "프로", "동", "번지",
    "킬로미터", "킬로그램", "미터", "센티미터", "밀리미터", "그램", "리터", "밀리리터", "킬로",
)
# After 번/대 these nouns make the number a label (Sino); otherwise 번/대 count (native).
LABEL_NOUNS = (
    "버스", "출구", "문제", "문항", "선수", "타자", "트랙", "게이트", "채널", "좌석", "창구",
    "승강장", "국도", "대통령", "국회", "회장", "총장", "타석", "홀", "플랫폼",
)
# Before a number with 번, these nouns (with an optional topic/subject particle) make it a label:
# 정답은 3번 -> 삼 번. "문제는 3번" is left out: it also says "the problem, three times".
LABEL_CUES = ("정답", "답", "출구", "게이트", "좌석", "채널", "트랙", "승강장", "플랫폼", "등번호", "번호")
# Before a bare number, these make it a code read digit by digit (인증번호 4827 -> 사팔이칠);
# after a plain 번호 it may also be a cardinal (방 번호 302 -> 삼공이|삼백이).
CODE_CUES = ("인증번호", "비밀번호", "코드", "암호", "비번", "pin", "핀", "otp", "끝자리", "뒷자리", "앞자리")
NUMBER_CUES = ("번호",)
# Before 10대..90대 these make 대 a count of machines (차 20대 -> 스무 대) instead of an age group.
MACHINES = (
    "차", "차량", "자동차", "버스", "택시", "트럭", "기차", "열차", "비행기", "항공기", "헬기", "오토바이",
    "자전거", "컴퓨터", "노트북", "카메라", "기계", "로봇", "드론", "에어컨", "냉장고", "세탁기", "tv",
    "티브이", "텔레비전", "휴대폰", "스마트폰", "전화기", "피아노", "서버",
)
# After 24시 these make it a business's hours, read Sino (24시 편의점 -> 이십사 시 편의점).
BUSINESSES = (
    "편의점", "영업", "운영", "마트", "사우나", "찜질방", "약국", "병원", "식당", "해장국", "콜센터",
    "상담", "무인", "개방", "김밥", "pc방", "피시방",
)
# After N.M a period date is an event's name (3.1절, 5.18 민주화운동), not a decimal.
EVENT_WORDS = (
    "절", "운동", "사태", "혁명", "항쟁", "의거", "선언", "전쟁", "테러", "참사", "사건", "민주화",
    "광복절", "특별법", "합의", "공동선언", "정신",
)
# Named dates whose conventional reading the group rule misses.
NAMED_DATES = {"12.12": "십이십이"}

UNITS = {
    "%p": ("퍼센트포인트", "포인트"), "%": ("퍼센트", "프로"), "°c": ("도",), "°f": ("도",), "℃": ("도",),
    "°": ("도",), "km2": ("제곱킬로미터", "평방킬로미터"), "m2": ("제곱미터", "평방미터"),
    "m²": ("제곱미터", "평방미터"), "㎡": ("제곱미터", "평방미터"), "cm2": ("제곱센티미터",),
    "m3": ("세제곱미터",), "km": ("킬로미터", "킬로"), "kg": ("킬로그램", "킬로"), "mm": ("밀리미터", "밀리"),
    "cm": ("센티미터", "센티"), "ml": ("밀리리터", "밀리"), "m": ("미터",), "g": ("그램",), "l": ("리터",),
    "tb": ("테라바이트", "테라"), "gb": ("기가바이트", "기가"), "mb": ("메가바이트", "메가"), "kb": ("킬로바이트",),
    "ghz": ("기가헤르츠",), "mhz": ("메가헤르츠",), "hz": ("헤르츠",), "kwh": ("킬로와트시",), "kw": ("킬로와트",),
    "mah": ("밀리암페어시",), "w": ("와트",), "v": ("볼트",),
}
_TEMPERATURE = frozenset({"°c", "°f", "℃", "°"})
_CELSIUS = frozenset({"°c", "℃"})
CURRENCY_PREFIX = {"$": "달러", "₩": "원", "€": "유로"}

_DIGIT = "영일이삼사오육칠팔구"
_SMALL = ("", "십", "백", "천")
_BIG = ("", "만", "억", "조", "경")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
_NATIVE_ONES = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_NOUN_ONES = ("", "하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉")
_MONTHS = ("", "일월", "이월", "삼월", "사월", "오월", "유월", "칠월", "팔월", "구월", "시월",
           "십일월", "십이월")
# Approximate numerals for neighbouring numbers (표준어 규정 제17항 and the dictionary's entries):
# 2~3명 -> 두세 명. 세네 (3~4) is not standard: 서너.
_NATIVE_APPROX = {
    (1, 2): ("한두",), (2, 3): ("두세",), (3, 4): ("서너",), (4, 5): ("네댓", "너덧"), (5, 6): ("대여섯",),
    (6, 7): ("예닐곱",), (7, 8): ("일고여덟",), (8, 9): ("여덟아홉", "엳아홉"),
}
_SINO_APPROX = {(a, a + 1): (_DIGIT[a] + ("륙" if a + 1 == 6 else _DIGIT[a + 1]),) for a in range(1, 9)}
_SINO_APPROX.update({(10 * a, 10 * a + 10): (_SINO_APPROX[a, a + 1][0] + "십",) for a in range(2, 9)})  # 사오십
# 석 달, 넉 달 are the dictionary's forms beside 세 달, 네 달 (표준어 규정 제17항 lists 석/넉 before
# 냥, 되, 섬, 자; the dictionary gives 석 달, 넉 달).
_SEOK = {("달", 3): "석", ("달", 4): "넉"}
# English digit names as loanwords (외래어 표기법: 스리, 에이트), with the spellings in use.
ENGLISH_DIGITS = ("제로", "원", "투", "스리|쓰리", "포", "파이브", "식스", "세븐", "에이트|에잇", "나인")
# Public service numbers are dialled, and said, digit by digit (119 -> 일일구).
SERVICE_NUMBERS = frozenset({"112", "114", "119", "120", "122", "129", "131", "182", "1330", "1339", "1345"})
# Counters after which a number of 100 or more is a label read either whole or digit by digit
# (472번 버스 -> 사백칠십이 번|사칠이 번, 302호 -> 삼백이 호|삼공이 호); 101동 stays 백일 동.
LABEL_COUNTERS = frozenset({"호", "호실"})


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


def sino_readings(n: int) -> list[str]:
    """sino(n), and for 10000..19999 the same with 일 before the leading 만 (일만 삼백이십)."""
    s = sino(n)
    return [s, "일" + s] if 10000 <= n < 20000 else [s]


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


def native_noun(n: int) -> str:
    """Native numeral 1..99 as a noun (하나, 스물, 스물하나), the form a particle follows."""
    tens, ones = divmod(n, 10)
    return _NATIVE_TENS[tens] + _NATIVE_NOUN_ONES[ones]


def _digits(s: str, zero: str = "영") -> str:
    return "".join(zero if d == "0" else _DIGIT[int(d)] for d in s)


def _digit_readings(s: str) -> list[str]:
    """Digit by digit, 0 as 공 or 영 (both in use; the whole string one way)."""
    return list(dict.fromkeys([_digits(s, "공"), _digits(s, "영")]))


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COUNTERS = frozenset(NATIVE_COUNTERS) | frozenset(SINO_COUNTERS)
# After a counter written apart from its number ("3 개"), only particles may follow before the word
# ends: "3 개가" is a count, "3 개구리" and "3 시민" are not.
_PARTICLES = (
    "이", "가", "을", "를", "은", "는", "의", "에", "에서", "에게", "께", "로", "으로", "와", "과", "도", "만", "씩",
    "쯤", "정도", "밖에", "까지", "부터", "나", "이나", "뿐", "짜리", "째", "당", "요", "이요", "랑", "이랑",
    "하고", "보다", "마다", "처럼", "만큼", "동안", "간", "가량", "여", "이다", "입니다", "이에요", "예요",
    "이야", "야", "이고", "고", "이며", "며", "인데", "이라", "라", "이면", "면", "였", "이었", "이지", "지",
)
_WORD_END = rf"(?:{_alt(_PARTICLES)})*(?![가-힣a-z\d])"
_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
# 인 counts people (3인 가족) unless it is the copula (7702인지, 3인데).
_SUFFIX = rf"(?:{_alt(UNITS)})(?![a-z\d])|{_alt(_COUNTERS)}|인(?![지데가])"
_MULT = r"(?:[천백만억]|조(?!각))+"
# The counter glued to the number, or after one space when the word ends there.
_GEN = (rf"(?:(?<![\w.])(?P<neg>[-−]))?(?P<cur>[$₩€])?(?P<num>(?>{_NUM}))(?:\.(?P<frac>\d+))?"
        rf"(?P<mult>{_MULT})?(?:(?P<suf>{_SUFFIX})|\s(?P<ssuf>{_SUFFIX})(?={_WORD_END}))?(?![a-z])")
_GEN_RE = re.compile(_GEN)
_GEN_ANON = re.sub(r"\(\?P<\w+>", "(?:", _GEN)
_LABEL_RE = re.compile(rf"\s?(?:{_alt(LABEL_NOUNS)})")
_LABEL_CUE = re.compile(rf"(?<![가-힣])(?:{_alt(LABEL_CUES)})(?:은|는|이|가|도)?[\s:]*$")
# The cue may be one word back: 운송장 번호 끝자리가 7702, 인증번호는 바로 4827.
_CODE_CUE = re.compile(rf"(?:{_alt(CODE_CUES)})[가-힣]{{0,2}}(?:\s+[가-힣]+)?[\s:]*$")
_NUMBER_CUE = re.compile(rf"(?:{_alt(NUMBER_CUES)})[가-힣]{{0,2}}(?:\s+[가-힣]+)?[\s:]*$")
_QUANTITY = re.compile(rf"\s?(?:{_alt(QUANTITY_WORDS)})")
_MACHINE_CUE = re.compile(rf"(?<![가-힣])(?:{_alt(MACHINES)})(?:가|이|를|을|는|은|도|만)?\s*$")
_BUSINESS = re.compile(rf"\s?(?:{_alt(BUSINESSES)})")
_ORDINAL = re.compile(r"(?<![가-힣])제\s?$")
_RANGE_SPLIT = re.compile(r"\s?[~〜]\s?")
_DATE_SEP = re.compile(r"[·・ㆍ‧.]")

_MASTER = re.compile(rf"""(?<![a-z\d])(?:
    (?P<iso>(?P<iy>\d{{4}})-(?P<im>\d{{2}})-(?P<id>\d{{2}}))(?!\d)
  | (?P<dotdate>(?P<dy>\d{{4}})\.\s?(?P<dm>\d{{1,2}})\.\s?(?P<dd>\d{{1,2}})\.?)(?!\d)
  | (?P<middot>\d+(?:[·・ㆍ‧]\d+)+)
  | (?P<event>\d{{1,2}}\.\d{{1,2}})(?=\s?(?:{_alt(EVENT_WORDS)}))
  | (?P<phone>(?:0\d*(?:-\d+)+|\d+(?:-\d+){{2,}}|\d{{3,}}(?:-\d{{3,}})+))(?!\d)
  | (?P<sphone>0\d{{1,2}}\s\d{{3,4}}\s\d{{4}})(?!\d)
  | (?<!/)(?P<fraction>(?P<fn>\d+)/(?P<fd>\d+))(?![\d/])
  | b(?P<basement>\d{{1,2}})(?=\s?층)
  | (?P<colon>(?P<c1>\d+):(?P<c2>\d+)(?::(?P<c3>\d{{2}}))?)(?!\d)
  | (?P<score>(?P<s1>\d+)\s?대\s?(?P<s2>\d+))(?!\d|[.,:]\d|{_MULT}|{_SUFFIX})
  | (?P<range>{_GEN_ANON}{_RANGE_SPLIT.pattern}{_GEN_ANON})
  | {_GEN}
)""", re.VERBOSE)


@dataclass(frozen=True)
class Span:
    """One number in the text, `text[start:end]`, and its readings (the usual one first)."""

    start: int
    end: int
    readings: tuple[str, ...]


def spans(text: str) -> list[Span]:
    """Every number in `text` (NFKC + casefolded, punctuation still there) with its readings."""
    out = []
    for m in _MASTER.finditer(text):
        after = text[m.end():]
        alts = _read_match(m, text[:m.start()], after)
        if after[:1].isdigit():  # keep adjacent numbers apart ("3시30분" -> 세 시 삼십 분)
            alts = [a + " " for a in alts]
        out.append(Span(m.start(), m.end(), tuple(dict.fromkeys(alts))))
    return out


def read_numbers(text: str) -> str:
    """Replace every number (with its unit or counter) in `text` by its usual Hangul reading."""
    parts, pos = [], 0
    for s in spans(text):
        parts += [text[pos:s.start], s.readings[0]]
        pos = s.end
    return "".join(parts) + text[pos:]


def _read_match(m: re.Match, before: str, after: str) -> list[str]:
    if m["iso"] or m["dotdate"]:
        names = ("iy", "im", "id") if m["iso"] else ("dy", "dm", "dd")
        y, mo, d = (int(x) for x in m.group(*names))
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return [f"{sino(y)} 년 {_MONTHS[mo]} {sino(d)} 일"]
        return [" ".join(_digits(g) for g in re.findall(r"\d+", m.group()))]
    if m["middot"] or m["event"]:
        first, *rest = _DATE_SEP.split(m["middot"] or m["event"])
        key = ".".join([first, *rest])
        if key in NAMED_DATES:
            return [NAMED_DATES[key]]
        return [sino(int(first)) + "".join(
            sino(int(g)) if int(g) % 10 == 0 and int(g) else _digits(g) for g in rest)]
    if m["phone"] or m["sphone"]:
        groups = re.split(r"[-\s]", m["phone"] or m["sphone"])
        zeros = ("공", "영") if "0" in "".join(groups) else ("공",)
        # Between groups a speaker pauses or says 에 (공일공에 일이삼사에 오육칠팔).
        seps = (" ", "에 ")
        return [sep.join(_digits(g, z) for g in groups) for z in zeros for sep in seps]
    if m["fraction"]:  # 1/3 -> 삼분의 일 (the denominator first)
        return [f"{sino(int(m['fd']))}분의 {sino(int(m['fn']))}"]
    if m["basement"]:  # B2층 -> 지하 이 층
        n = int(m["basement"])
        english = ENGLISH_DIGITS[n].split("|") if n < 10 else []
        return [f"지하 {sino(n)}", f"비 {sino(n)}", *(f"비 {e}" for e in english)]
    if m["colon"]:
        h, mi, s = int(m["c1"]), m["c2"], m["c3"]
        if len(mi) == 2 and h <= 24 and int(mi) < 60:
            minutes = [""] if not int(mi) else [f" {sino(int(mi))} 분"] + ([" 반"] if int(mi) == 30 else [])
            secs = f" {sino(int(s))} 초" if s else ""
            return [f"{hour} 시{mins}{secs}" for hour in _hour(h, after) for mins in minutes]
        return [f"{sino(h)} 대 {sino(int(mi))}" + (f" 대 {sino(int(s))}" if s else "")]
    if m["score"]:
        return [f"{sino(int(m['s1']))} 대 {sino(int(m['s2']))}"]
    if m["range"]:
        return _range(m["range"], before, after)
    nums, tails = _gen(m, before, after)
    return [n + t for n, t in product(nums, tails)]


def _range(text: str, before: str, after: str) -> list[str]:
    left, right = (_GEN_RE.fullmatch(p) for p in _RANGE_SPLIT.split(text, maxsplit=1))
    assert left is not None and right is not None, "the range pattern is two _GEN parts around _RANGE_SPLIT"
    r_nums, r_tails = _gen(right, before, after, alone=False)
    rights = [n + t for n, t in product(r_nums, r_tails)]
    if _suffix(left) or left["cur"]:  # 9시~11시: each side is whole
        l_nums, l_tails = _gen(left, before, "", alone=False)
        return [f"{ln}{lt}에서 {r}" for ln, lt in product(l_nums, l_tails) for r in rights]
    counter = _suffix(right)
    if counter == "월":  # 3~5월 -> 삼월에서 오월
        l_nums, _ = _gen(left, before, "", counter, alone=False)
        return [f"{ln}에서 {r}" for ln in l_nums for r in rights]
    l_nums, _ = _gen(left, before, "", counter or None, alone=False)
    out = []
    a, b = int(left["num"].replace(",", "")), int(right["num"].replace(",", ""))
    plain = not (left["frac"] or right["frac"] or left["mult"] or right["mult"] or left["neg"] or right["neg"])
    native_counter = counter in NATIVE_COUNTERS and r_nums[0] != sino(b)
    if plain and native_counter:
        out += [f"{w}{t}" for w in _NATIVE_APPROX.get((a, b), ()) for t in r_tails]
    out += [f"{ln}{t}에서 {rn}{t}" for ln in l_nums for rn, t in product(r_nums, r_tails)]
    if plain and native_counter and 1 <= a <= 99:  # the numeral as a noun takes the particle: 셋에서 다섯 개
        out += [f"{native_noun(a)}에서 {r}" for r in rights]
    if not native_counter:
        out[:0] = [f"{ln}에서 {r}" for ln in l_nums for r in rights]
        if plain and counter:
            out += [f"{w}{t}" for w in _SINO_APPROX.get((a, b), ()) for t in r_tails]
    return out


def _suffix(m: re.Match) -> str:
    return m["suf"] or m["ssuf"] or ""


def _gen(m: re.Match, before: str, after: str, system_of: str | None = None,
         alone: bool = True) -> tuple[list[str], list[str]]:
    """One number with its sign, currency, multiplier and unit/counter: (numeral readings, tails).

    Each reading is a numeral reading followed by a tail (" 개", " 달러", ...). `system_of`: for
    the bare left side of a range, the counter whose numeral system to use; `alone`: not a side
    of a range.
    """
    raw, frac, mult = m["num"].replace(",", ""), m["frac"], m["mult"] or ""
    suf = _suffix(m)
    counter = system_of if system_of is not None else suf
    n = int(raw)
    cued = counter == "번" and _LABEL_CUE.search(before[-20:])
    label = counter in ("번", "대") and bool(_LABEL_RE.match(after) or cued)
    bare = not counter and not m["cur"] and raw == m["num"] and frac is None and not mult
    if frac is not None:
        nums = [f"{sino(n)} 점 {_digits(frac)}{mult}"]
    elif mult:
        nums = [("" if n == 1 and mult[0] in "천백만" else sino(n)) + mult]
        if n == 1 and mult[0] == "만":
            nums.append("일" + mult)
    elif bare and ((len(raw) > 1 and raw[0] == "0") or raw in SERVICE_NUMBERS or _CODE_CUE.search(before[-20:])):
        nums = _digit_readings(raw)
    elif bare and _NUMBER_CUE.search(before[-20:]):
        nums = _digit_readings(raw) + sino_readings(n)
    elif counter == "월" and 1 <= n <= 12:  # one word, irregular 유월/시월
        return [_MONTHS[n]], [""]
    elif _ORDINAL.search(before[-20:]):
        nums = sino_readings(n)
    elif counter in NATIVE_COUNTERS and not label:
        nums = _native(n, counter, before, after)
    else:
        nums = sino_readings(n)
        if (label or counter in LABEL_COUNTERS) and n >= 100 and raw == m["num"]:
            nums += _digit_readings(raw)
        if bare and alone and 1 <= n <= 99 and not m["neg"] and not re.match(r"[가-힣]", after):
            nums.append(native_noun(n))  # counting aloud: 하나, 둘, 셋
    if m["neg"]:
        signs = ("영하 ", "마이너스 ") if suf in _TEMPERATURE else ("마이너스 ",)
        nums = [s + x for s in signs for x in nums]
    if suf in _CELSIUS:  # ℃ is 섭씨 ... 도: the scale may be said
        nums += ["섭씨 " + x for x in nums]
    cur = " " + CURRENCY_PREFIX[m["cur"]] if m["cur"] else ""
    if system_of is not None or not suf:
        return nums, [cur]
    return nums, [f"{cur} {w}" for w in UNITS.get(suf, (suf,))]


def _hour(n: int, after: str) -> list[str]:
    """시 as the hour: native 1..12, native or Sino 13..24 (24시 before a business: Sino)."""
    if 1 <= n <= 12:
        return [native(n)]
    if n == 24 and _BUSINESS.match(after):
        return [sino(n)]
    if 13 <= n <= 24:
        return [native(n), sino(n)]
    return [sino(n)]


def _native(n: int, counter: str, before: str, after: str) -> list[str]:
    if counter == "시":
        return _hour(n, after)
    if counter == "번째" and n == 1:
        return ["첫"]
    if counter == "대" and n in range(10, 100, 10) and not _MACHINE_CUE.search(before[-20:]):
        return [sino(n)]  # 20대 is an age group or a rank (십 대 기업), not twenty machines
    if n == 0:
        return ["영"]
    if n <= 99:
        out = [native(n)]
        if (counter, n) in _SEOK:
            out.append(_SEOK[counter, n])
        if (counter in SINO_TOO and not _QUANTITY.match(after)) or n >= DUAL_COUNTERS.get(counter, 100):
            out.append(sino(n))
        return out
    rest = n % 100
    out = sino_readings(n)
    if rest:  # native numerals stop at 99: 101명 -> 백한 명 beside 백일 명
        out.append(sino(n - rest) + native(rest))
    return out
