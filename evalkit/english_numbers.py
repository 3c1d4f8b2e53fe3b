"""Read digits, number symbols and common abbreviations in English text aloud, as words.

`read_numbers` runs on BOTH the suite text and the ASR transcript (after NFKC + casefold, before
punctuation is stripped), so "3 apples" and "three apples", "$12.50" and "12 dollars and 50
cents", "7:45 pm" and "7.45 p.m." compare equal, while "4 apples" for "3 apples" stays an error.
The output holds no digits and text that already spells things out passes through unchanged (up
to the word canonicalizations of pass 3), so read(read(x)) == read(x).

Pass 1, abbreviations and symbols (before numbers, so "jan. 8" can become a date):
 a. Dotted initialisms close up: a.m. -> am, p. m. -> pm, u.s.a. -> usa, e.g. -> eg.
 b. Titles and words, period optional: mr mister, mrs missus, ms miz, prof professor, lt
    lieutenant, sgt sergeant, capt captain, mt mount, jr junior, sr senior, vs versus, etc et
    cetera, approx approximately, blvd boulevard. dr and st: doctor / saint when a word follows
    ("dr. moreau", "st. mary's"), else drive / street ("elm st., next"). Period required (they are
    also words): gen general, col colonel, gov governor, sen senator, rep representative, ave
    avenue, rd road, dept department, mon. tue. tues. thu. thur. thurs. fri. -> the day; wed. sat.
    sun. only before a date (", jan. 8"). Month abbreviations (jan. ... dec., sept.) need a period
    or a following number. Not after "<digit> " (5 ms is a unit).
 c. "no." or "#" before a number -> number; "&" -> and; "° c" -> "°c".
Pass 2, numbers, tried in this order at every digit (or month name):
 1. Numeric dates a/b/yyyy or a-b-yyyy (also yy) and ISO yyyy-mm-dd -> "december fifth twenty
    twenty three": month/day/year when a <= 12 (US order), day/month/year ("fifth december
    ...") when only b can be a month; otherwise the groups are read one by one.
 2. Phone-like hyphenated digits (three or more groups, or a group starting with 0): digit by
    digit, zero as "zero".
 3. Clock times h:mm[:ss] (h <= 24, mm < 60) with optional am/pm, and h.mm only before am/pm:
    "7:45 pm" -> "seven forty five pm", ":00" is silent ("7:00 pm" = "7 pm" -> "seven pm"),
    minutes 01-09 read "oh five". Other colon pairs (16:9) read as two numbers.
 4. Money, symbol first ([-]$ £ € ¥ amount [thousand|million|billion|k|m|bn]) or "12.50 dollars":
    canonical "twelve dollars fifty" (cents as a bare number after the unit), "$4" -> "four
    dollars", "$1.25" -> "one dollar twenty five", "$0.99" -> "ninety nine cents", "$2.4
    million" -> "two point four million dollars"; pounds/pence, euros/cents, yen.
 5. Fractions a/b with a < b <= 10: "1/2" -> "one half", "3/4" -> "three quarters", "2/3" -> "two
    thirds"; a whole number before it joins with "and" (1 1/2 -> one and one half). Other a/b: two
    numbers.
 6. Ranges a-b (1-4 digits each): "10-20" -> "ten to twenty" (the right side is read next, with
    its unit).
 7. Month name + day 1..31 (optional st/nd/rd/th) -> ordinal: "march 3" = "march 3rd" -> "march
    third"; a day before a month ("3 march", "3rd of march") -> "third march" / "third of march".
 8. Decades: 1990s / '90s / 90's -> "nineteen nineties" / "nineties".
 9. Everything else: [sign] number [.fraction] [st|nd|rd|th | unit]:
    - cardinals without "and" or hyphens: 350 -> "three hundred fifty", 1,500 -> "one thousand
      five hundred"; up to 15 digits, longer strings and numbers with a leading zero (007) are
      read digit by digit.
    - a bare 4-digit number 1100..2099 (no comma, no unit, not before a currency word), except
      2000..2009, is a year: 1887 -> "eighteen eighty seven", 1900 -> "nineteen hundred", 1905
      -> "nineteen oh five", 2024 -> "twenty twenty four"; 2005 -> "two thousand five".
    - decimals: "three point five", digits one by one after the point; 0.5 -> "point five".
    - ordinals: 21st -> "twenty first", 2nd -> "second", 12th -> "twelfth".
    - a sign after a space, an opening bracket or quote: - or − -> "minus", + -> "plus".
    - units (singular for exactly 1): % percent, °c degrees celsius, °f degrees fahrenheit, °
      degrees, km/h kph kmh, mph, m/s, km m cm mm mi ft yd, m2 km2, kg g mg lb lbs oz, l ml,
      tbsp tsp, kb mb gb tb, hz khz mhz ghz, kw kwh, ms min(s) sec(s) hr(s); glued ("5km"), spaced
      or hyphenated ("5-km").
    - digits glued to letters are spaced off: mp3 -> "mp three", 10am -> "ten am".
Pass 3, spelled-out numbers (applies to both sides, so written words meet the digit readings):
 a. "a hundred/thousand/million/..." -> "one ..."; "hundred and fifty" -> "hundred fifty".
 b. "two thousand [and] <ten..ninety nine>" (not inside a larger number) -> "twenty <..>", so
    "two thousand and twenty-four", 2,024 and 2024 all read "twenty twenty four".
 c. "<unit> [and] <number> cents|pence" -> "<unit> <number>" (12 dollars and 50 cents =
    $12.50); "and a half/quarter" -> "and one half/quarter".
 d. "zero point" / "nought point" -> "point"; "negative <number>" -> "minus <number>"; "per
    cent" -> "percent"; metre/litre (kilo-, centi-, milli-) -> meter/liter; "degrees
    centigrade" and "degrees c" -> "degrees celsius", "degrees f" -> "degrees fahrenheit".
Hyphens in "twenty-first" are left for textnorm, which turns them into spaces.

Deliberately approximate (what a speaker says is not decidable from the text alone):
 - A bare 1887 is a year but "1,887" is "one thousand eight hundred eighty seven"; "fifteen
   hundred" != "one thousand five hundred"; "nineteen oh five" != "nineteen hundred and five".
 - Numeric dates are US month/day first: 12/05/2023 is December 5; "5 december" != "december
   5th" (word order kept). A month name followed by a number is a date ("may 3", "march 3").
 - "$12.50" read "twelve fifty" (no "dollars") or a bare "12.50" does not match "twelve dollars
   fifty"; "1.25" outside money is "one point two five".
 - "st"/"dr" before any word become saint/doctor ("elm st. next" -> saint); ms is miz
   everywhere but after a number; single-letter units after a number (5 m, 2 g, 3 l) are units
   (so "5g network" reads "five grams network" on both sides).
 - "2 terabyte drive" != "2 TB drive" (plural chosen by the number only); "kilometres an hour"
   != "km/h"; "one fourth" != "1/4" (one quarter); "a half" alone stays; unit abbreviations
   expand only after digits ("forty kph" stays).
 - 7:00 drops ":00" ("seven"), so "seven o'clock" keeps its extra word; 24-hour times read as
   plain numbers ("eighteen thirty"); "10 - 20" with spaces reads "ten - twenty" (no "to").
 - Single letters with periods and no space close up only when dotted throughout ("j.k." -> jk,
   "j. k." stays two letters), except a. m. / p. m.
"""

from __future__ import annotations

import re

VERSION = "1"

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
        "nine": "ninth", "twelve": "twelfth"}
NUMBER_WORDS = frozenset(_ONES + list(_TENS[2:]) + ["hundred"] + [s for _, s in _SCALES])
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]

UNITS = {
    "km/h": "kilometer per hour", "kph": "kilometer per hour", "kmh": "kilometer per hour",
    "mph": "mile per hour", "m/s": "meter per second", "km2": "square kilometer",
    "m2": "square meter", "km": "kilometer", "cm": "centimeter", "mm": "millimeter", "m": "meter",
    "mi": "mile", "ft": "foot/feet", "yd": "yard", "kg": "kilogram", "mg": "milligram",
    "g": "gram", "lbs": "pound", "lb": "pound", "oz": "ounce", "ml": "milliliter", "l": "liter",
    "tbsp": "tablespoon", "tsp": "teaspoon", "kb": "kilobyte", "mb": "megabyte", "gb": "gigabyte",
    "tb": "terabyte", "khz": "kilohertz/kilohertz", "mhz": "megahertz/megahertz",
    "ghz": "gigahertz/gigahertz", "hz": "hertz/hertz", "kwh": "kilowatt hour", "kw": "kilowatt",
    "ms": "millisecond", "mins": "minute", "min": "minute", "secs": "second", "sec": "second",
    "hrs": "hour", "hr": "hour", "%": "percent/percent", "°c": "degree celsius",
    "°f": "degree fahrenheit", "°": "degree",
}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "", "")}
_CURRENCY_WORD = {"dollar": "$", "pound": "£", "euro": "€"}
_MONEY_SCALE = {"k": "thousand", "m": "million", "mn": "million", "b": "billion", "bn": "billion"}
# abbreviation -> (expansion, when): any = period optional; dot = period required; month = period
# or a following number; date = period and a following date; number = period and a number.
ABBREVIATIONS = {
    "mr": ("mister", "any"), "mrs": ("missus", "any"), "ms": ("miz", "any"), "prof": ("professor", "any"),
    "lt": ("lieutenant", "any"), "sgt": ("sergeant", "any"), "capt": ("captain", "any"),
    "mt": ("mount", "any"), "jr": ("junior", "any"), "sr": ("senior", "any"), "vs": ("versus", "any"),
    "etc": ("et cetera", "any"), "approx": ("approximately", "any"), "blvd": ("boulevard", "any"),
    "dr": ("doctor/drive", "any"), "st": ("saint/street", "any"),
    "gen": ("general", "dot"), "col": ("colonel", "dot"), "gov": ("governor", "dot"),
    "sen": ("senator", "dot"), "rep": ("representative", "dot"), "ave": ("avenue", "dot"),
    "rd": ("road", "dot"), "dept": ("department", "dot"), "no": ("number", "number"),
    "mon": ("monday", "dot"), "tue": ("tuesday", "dot"), "tues": ("tuesday", "dot"),
    "thu": ("thursday", "dot"), "thur": ("thursday", "dot"), "thurs": ("thursday", "dot"),
    "fri": ("friday", "dot"), "wed": ("wednesday", "date"), "sat": ("saturday", "date"),
    "sun": ("sunday", "date"), "sept": ("september", "month"),
    **{m[:3]: (m, "month") for m in MONTHS if m != "may"},
}


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def cardinal(n: int) -> str:
    """350 -> 'three hundred fifty' (no 'and', no hyphens)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f" {_ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{_ONES[n // 100]} hundred" + (f" {cardinal(n % 100)}" if n % 100 else "")
    for value, name in _SCALES:
        if n >= value:
            return f"{cardinal(n // value)} {name}" + (f" {cardinal(n % value)}" if n % value else "")
    raise AssertionError(n)


def year(n: int) -> str:
    """1887 -> 'eighteen eighty seven', 1900 -> 'nineteen hundred', 1905 -> 'nineteen oh five'."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    return f"{cardinal(hi)} " + (f"oh {_ONES[lo]}" if lo < 10 else cardinal(lo))


def _last_word(words: str, f) -> str:
    head, _, last = words.rpartition(" ")
    return (head + " " if head else "") + f(last)


def ordinal(words: str) -> str:
    return _last_word(words, lambda w: _ORD.get(w) or (w[:-1] + "ieth" if w.endswith("y") else w + "th"))


def plural(words: str) -> str:
    return _last_word(words, lambda w: w[:-1] + "ies" if w.endswith("y") else w + "e" * w.endswith("x") + "s")


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _integer(raw: str, allow_year: bool = False) -> str:
    s = raw.replace(",", "")
    if len(s) > 15 or (len(s) > 1 and s[0] == "0" and "," not in raw):
        return _digits(s)
    n = int(s)
    if allow_year and "," not in raw and len(s) == 4 and 1100 <= n <= 2099 and not 2000 <= n <= 2009:
        return year(n)
    return cardinal(n)


def _decimal(raw: str, frac: str) -> str:
    whole = "" if int(raw.replace(",", "")) == 0 else _integer(raw) + " "
    return f"{whole}point {_digits(frac)}"


def _unit(key: str, singular: bool) -> str:
    one, _, many = UNITS[key].partition("/")  # plural: the listed one, else the head word's
    if singular or many:
        return one if singular else many
    return re.sub(r"\w+(?=(?: per \w+| celsius| fahrenheit)?$)", lambda w: plural(w.group()), one, count=1)


def _money(cur: str, raw: str, frac: str | None, scale: str | None) -> str:
    one, many, cent, cents = CURRENCIES[cur]
    n = int(raw.replace(",", ""))
    if scale:
        amount = _decimal(raw, frac) if frac else _integer(raw)
        return f"{amount} {_MONEY_SCALE.get(scale, scale)} {many}"
    if frac and len(frac) == 2 and cent:
        c = int(frac)
        if n == 0 and c:
            return f"{cardinal(c)} {cent if c == 1 else cents}"
        return f"{_integer(raw)} {one if n == 1 else many}" + (f" {cardinal(c)}" if c else "")
    if frac:
        return f"{_decimal(raw, frac)} {many}"
    return f"{_integer(raw)} {one if n == 1 else many}"


_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_UNIT_RE = _alt(UNITS)
_MONTH_RE = _alt(MONTHS)
_AMPM = r"(?:\s?(?P<{}>am|pm)(?![a-z]))"
_MASTER = re.compile(rf"""
    (?<!\d)(?P<iso>(?P<iy>\d{{4}})-(?P<im>\d{{1,2}})-(?P<id>\d{{1,2}}))(?![\d-])
  | (?<!\d)(?P<sdate>(?P<sa>\d{{1,2}})(?P<sep>[/-])(?P<sb>\d{{1,2}})(?P=sep)(?P<sy>\d{{4}}|\d{{2}}))(?![\d/-])
  | (?<![\d-])(?P<phone>\d+(?:-\d+){{2,}}|0\d*-\d+|\d+-0\d+)(?!\d)
  | (?<![\d:])(?P<th>\d{{1,2}}):(?P<tm>\d{{2}})(?::(?P<ts>\d{{2}}))?(?![\d:]){_AMPM.format("tap")}?
  | (?<![\d.])(?P<dh>\d{{1,2}})\.(?P<dm>\d{{2}}){_AMPM.format("dap")}
  | (?:(?<![^\s(\["'“‘])(?P<msign>[-−+]))?(?P<cur>[$£€¥])\s?(?P<mnum>{_NUM})(?:\.(?P<mfrac>\d+))?
        (?:\s?(?P<mscale>thousand|million|billion|trillion|bn|mn|k|m|b)(?![a-z]))?
  | (?<![\d.])(?P<wnum>{_NUM})\.(?P<wfrac>\d\d)\s(?P<wcur>dollar|pound|euro)s?\b
  | (?<![\d/])(?:(?P<whole>\d+)\s)?(?P<fa>\d{{1,2}})[/⁄](?P<fb>\d{{1,2}})(?![\d/⁄])
  | (?<![\d.,-])(?P<ra>\d{{1,4}})[-–](?=\d{{1,4}}(?![\d,]|\.\d|[-–]\d))
  | (?<![a-z])(?P<mon>{_MONTH_RE})\s(?P<mday>\d{{1,2}})(?:st|nd|rd|th)?(?![\da-z:%]|[.,]\d|\s?[ap]m\b)
  | (?<![\d.,])(?P<dday>\d{{1,2}})(?:st|nd|rd|th)?(?=\s(?:of\s)?(?:{_MONTH_RE})\b)
  | (?:(?<!\w)['’])?(?P<decade>\d{{1,3}}0)['’]?s(?!\w)
  | (?:(?<![^\s(\["'“‘])(?P<sign>[-−+]))?(?P<num>{_NUM})(?:\.(?P<frac>\d+))?
        (?:(?P<ord>st|nd|rd|th)(?![a-z])|(?:\s?|-)(?P<unit>{_UNIT_RE})(?![a-z\d]))?
""", re.VERBOSE)
_CURRENCY_AFTER = re.compile(r"\s?(?:dollar|pound|euro|yen|cent|pence)")


def _read(m: re.Match) -> str:
    g = m.group
    if g("iso") or g("sdate"):
        a, b, y = (int(g("im")), int(g("id")), g("iy")) if g("iso") else (int(g("sa")), int(g("sb")), g("sy"))
        yr = _integer(y, allow_year=True) if len(y) == 4 else cardinal(int(y))
        yr = "oh " + yr if len(y) == 2 and y[0] == "0" else yr  # 12/05/09 -> ... oh nine
        if 1 <= a <= 12 and 1 <= b <= 31:
            return f"{MONTHS[a - 1]} {ordinal(cardinal(b))} {yr}"
        if 1 <= b <= 12 and 1 <= a <= 31:
            return f"{ordinal(cardinal(a))} {MONTHS[b - 1]} {yr}"
        return " ".join(_integer(x) for x in re.findall(r"\d+", m.group()))
    if g("phone"):
        return " ".join(_digits(x) for x in g("phone").split("-"))
    if g("th") or g("dh"):
        h, mi, ss, ap = g("th", "tm", "ts", "tap") if g("th") else (g("dh"), g("dm"), None, g("dap"))
        ap = f" {ap}" if ap else ""
        if int(h) > (12 if ap else 24) or int(mi) > 59:  # a ratio or score, or a decimal
            if not g("th"):
                return _decimal(h, mi) + ap
            return f"{_integer(h)}:{_integer(mi)}" + (f":{_integer(ss)}" if ss else "") + ap
        out = cardinal(int(h))
        if int(mi) or ss:
            out += " " + ("oh " + _ONES[int(mi)] if int(mi) < 10 else cardinal(int(mi)))
        return out + (f" {cardinal(int(ss))}" if ss else "") + ap
    if g("cur"):
        return _sign(g("msign")) + _money(g("cur"), g("mnum"), g("mfrac"), g("mscale"))
    if g("wcur"):
        return _money(_CURRENCY_WORD[g("wcur")], g("wnum"), g("wfrac"), None)
    if g("fa"):
        a, b = int(g("fa")), int(g("fb"))
        whole = _integer(g("whole")) + (" and " if a < b else " ") if g("whole") else ""
        if not 0 < a < b <= 10:
            return f"{whole}{_integer(g('fa'))}/{_integer(g('fb'))}"
        name = {2: "half", 4: "quarter"}.get(b) or ordinal(cardinal(b))
        return f"{whole}{cardinal(a)} " + (name if a == 1 else "halves" if b == 2 else name + "s")
    if g("ra"):
        return _integer(g("ra"), allow_year=True) + " to "
    if g("mon"):
        d = int(g("mday"))
        return f"{g('mon')} " + (ordinal(cardinal(d)) if 1 <= d <= 31 else cardinal(d))
    if g("dday"):
        return ordinal(cardinal(int(g("dday"))))
    if g("decade"):
        return plural(_integer(g("decade"), allow_year=True))
    raw, frac, unit = g("num"), g("frac"), g("unit")
    if g("ord"):
        out = ordinal(_integer(raw))
    elif frac:
        out = _decimal(raw, frac)
    else:
        out = _integer(raw, allow_year=not unit and not _CURRENCY_AFTER.match(m.string, m.end()))
    if unit:
        out += " " + _unit(unit, not frac and int(raw.replace(",", "")) == 1)
    return _sign(g("sign")) + out


def _sign(sign: str | None) -> str:
    return "" if not sign else "plus " if sign == "+" else "minus "


def _replace(m: re.Match) -> str:
    out, s = _read(m), m.string
    if m.start() and s[m.start() - 1].isalnum():
        out = " " + out
    return out + " " if s[m.end():m.end() + 1].isalnum() and not out.endswith(" ") else out


_INITIALISM = re.compile(r"(?<![\w.])[a-z](?:\.[a-z])+\.?(?!\w)")
_SPACED_AMPM = re.compile(r"(?<![\w.])([ap])\.\s(m)\.?(?!\w)")
_ABBR = re.compile(rf"(?<![\w.'’])(?<!\d )({_alt(ABBREVIATIONS)})(\.)?(?![\w'’])")
_DATE_AFTER = re.compile(rf",?\s+(?:\d|{_MONTH_RE}|{_alt(m[:3] for m in MONTHS)})")


def _abbreviation(m: re.Match) -> str:
    key, dot, after = m.group(1), m.group(2), m.string[m.end():]
    expansion, when = ABBREVIATIONS[key]
    ok = {"any": True, "dot": dot, "month": dot or re.match(r"\s\d", after),
          "date": dot and _DATE_AFTER.match(after), "number": dot and re.match(r"\s?\d", after)}[when]
    if not ok:
        return m.group()
    if "/" in expansion:  # doctor/drive, saint/street: the title reading when a name follows
        title, place = expansion.split("/")
        expansion = title if re.match(r"\s+[a-z]", after) else place
    return expansion + (" " if after[:1].isalnum() else "")


_NW = _alt(NUMBER_WORDS)
_NW_RUN = rf"(?:{_NW})(?:[ -](?:{_NW}))*"
_TWO_THOUSAND = re.compile(rf"\btwo thousand (?:and )?(?=(?:{_alt(_ONES[10:] + list(_TENS[2:]))})\b)")
_WORD_RULES = (
    (re.compile(r"(?<![\w'’])a (?=(?:hundred|thousand|million|billion|trillion)\b)"), "one "),
    (re.compile(rf"\b(hundred|thousand|million|billion|trillion) and (?=(?:{_NW})\b)"), r"\1 "),
    (re.compile(rf"\b(dollars?|pounds?|euros?) (?:and )?({_NW_RUN}) (?:cents?|pence)\b"), r"\1 \2"),
    (re.compile(r"\band a (half|quarter)\b"), r"and one \1"),
    (re.compile(r"\b(?:zero|nought) point\b"), "point"),
    (re.compile(rf"\bnegative (?=(?:{_NW}|point)\b)"), "minus "),
    (re.compile(r"\bper cent\b"), "percent"),
    (re.compile(r"\b((?:kilo|centi|milli)?)(met|lit)re(s?)\b"), r"\1\2er\3"),
    (re.compile(r"\b(degrees?) (?:centigrade|c)\b"), r"\1 celsius"),
    (re.compile(r"\b(degrees?) f\b"), r"\1 fahrenheit"),
)


def _two_thousand(m: re.Match) -> str:
    before = m.string[:m.start()]
    prev = before.split()[-1] if before.split() else ""
    if before.endswith("-") or prev.strip(",") in NUMBER_WORDS:
        return m.group()
    return "twenty "


def read_numbers(text: str) -> str:
    """Replace every number (with its unit), number symbol and abbreviation by its spoken words."""
    s = _INITIALISM.sub(lambda m: m.group().replace(".", ""), text)
    s = _SPACED_AMPM.sub(r"\1\2", s)
    s = _ABBR.sub(_abbreviation, s)
    s = re.sub(r"#\s?(?=\d)", "number ", s.replace("&", " and "))
    s = re.sub(r"°\s+(?=[cf](?![a-z]))", "°", s)
    s = re.sub(r"(\d)(?=\d⁄\d)", r"\1 ", s)  # NFKC turns 1½ into 11⁄2
    s = _MASTER.sub(_replace, s)
    for pattern, repl in _WORD_RULES[:2]:
        s = pattern.sub(repl, s)
    s = _TWO_THOUSAND.sub(_two_thousand, s)
    for pattern, repl in _WORD_RULES[2:]:
        s = pattern.sub(repl, s)
    return s
