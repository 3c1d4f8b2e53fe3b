"""Known answers for the English number and abbreviation reader (evalkit.english_numbers)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from evalkit import english_numbers, textnorm
from evalkit.english_numbers import VERSION, cardinal, read_numbers, year

SUITE = Path(__file__).resolve().parents[1] / "suites" / "en-base" / "utterances.jsonl"


def prep(text: str) -> str:
    """What the caller hands over: NFKC + casefold, punctuation still there."""
    return unicodedata.normalize("NFKC", text).casefold()


def read(text: str) -> str:
    return read_numbers(prep(text))


def norm(text: str) -> str:
    """The full normalizer as it will be wired: textnorm.normalize calls read_numbers after casefold."""
    return textnorm.normalize(read(text), "en")


def suite_texts() -> list[str]:
    lines = SUITE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def fresh_textnorm():
    """evalkit.textnorm executed anew (not registered in sys.modules), reading the readers' VERSION as it is now."""
    import importlib.util

    spec = importlib.util.find_spec("evalkit.textnorm")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_version_is_part_of_the_normalizer_version(monkeypatch):
    """Bumping this reader's VERSION changes textnorm.VERSION, which every run records (and compare
    checks), so transcripts normalized by different readers are never silently compared."""
    assert fresh_textnorm().VERSION == textnorm.VERSION
    monkeypatch.setattr(english_numbers, "VERSION", VERSION + ".1")
    assert fresh_textnorm().VERSION != textnorm.VERSION


@pytest.mark.parametrize("n, expected", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (30, "thirty"), (45, "forty five"),
    (100, "one hundred"), (350, "three hundred fifty"), (1500, "one thousand five hundred"),
    (450000, "four hundred fifty thousand"), (1000000, "one million"),
    (2024, "two thousand twenty four"),
])
def test_cardinal(n, expected):
    assert cardinal(n) == expected


@pytest.mark.parametrize("n, expected", [
    (1887, "eighteen eighty seven"), (1900, "nineteen hundred"), (1905, "nineteen oh five"),
    (2024, "twenty twenty four"), (1999, "nineteen ninety nine"),
])
def test_year(n, expected):
    assert year(n) == expected


@pytest.mark.parametrize("text, expected", [
    # en-base fragments
    ("We counted 3 apples, 14 pears, and 27 plums", "we counted three apples, fourteen pears, and twenty seven plums"),
    ("on March 3, 2024, at 9:30 am sharp.", "on march third, twenty twenty four, at nine thirty am sharp."),
    ("The sandwich costs $12.50, but the soup is only $4.",
     "the sandwich costs twelve dollars fifty, but the soup is only four dollars."),
    ("drop to -5°C, with winds of 40 km/h.",
     "drop to minus five degrees celsius, with winds of forty kilometers per hour."),
    ("Mr. and Mrs. Okafor live on Elm St., next to", "mister and missus okafor live on elm street, next to"),
    ("(finished in 1887)", "(finished in eighteen eighty seven)"),
    ("He finished 21st out of 350 runners", "he finished twenty first out of three hundred fifty runners"),
    ("at 7:45 pm on Friday, June 14.", "at seven forty five pm on friday, june fourteenth."),
    ("They raised 1,500 dollars", "they raised one thousand five hundred dollars"),
    ("Only 30% of the tickets", "only thirty percent of the tickets"),
    ("Dr. Lindqvist ... your ID, etc.", "doctor lindqvist ... your id, et cetera"),
    ("the recipe calls for 3.5 cups of flour and 2 eggs.",
     "the recipe calls for three point five cups of flour and two eggs."),
    ("signed on 12/05/2023 or", "signed on december fifth twenty twenty three or"),
    ("Can you lend me €20 until Friday?", "can you lend me twenty euros until friday?"),
    ("walked 5 km uphill carrying packs of 10 kg each",
     "walked five kilometers uphill carrying packs of ten kilograms each"),
    ("with Prof. Adeyemi was moved to Mon., Jan. 8.", "with professor adeyemi was moved to monday, january eighth."),
    ("Is the 2nd floor office", "is the second floor office"),
    ("open from 10 am to 5:30 pm,", "open from ten am to five thirty pm,"),
    ("sold for £450,000, well", "sold for four hundred fifty thousand pounds, well"),
    ("Mix 250 ml of milk with 2 tbsp of sugar",
     "mix two hundred fifty milliliters of milk with two tablespoons of sugar"),
    ("Gen. Harlow and Lt. Brooks arrived at St. Mary's",
     "general harlow and lieutenant brooks arrived at saint mary's"),
    ("a budget of $2.4 million, though", "a budget of two point four million dollars, though"),
    ("reached 85°C.", "reached eighty five degrees celsius."),
    ("a 50% discount on a 2 TB drive", "a fifty percent discount on a two terabytes drive"),
    ("costs $7.99, plus a $1.25 booking fee.",
     "costs seven dollars ninety nine, plus a one dollar twenty five booking fee."),
    # more shapes
    ("$0.99", "ninety nine cents"), ("$1", "one dollar"), ("£3.50", "three pounds fifty"),
    ("0.5", "point five"), ("007", "zero zero seven"), ("1,000,000", "one million"),
    ("1990s", "nineteen nineties"), ("the '90s", "the nineties"), ("2005", "two thousand five"),
    ("6:05 am", "six oh five am"), ("7:00 pm", "seven pm"), ("7.45 p.m.", "seven forty five pm"),
    ("1/2 cup", "one half cup"), ("3/4", "three quarters"), ("1½ cups", "one and one half cups"),
    ("24/7", "twenty four/seven"), ("10-20 km", "ten to twenty kilometers"),
    ("010-1234-5678", "zero one zero one two three four five six seven eight"),
    ("2023-12-05", "december fifth twenty twenty three"), ("13/05/2023", "thirteenth may twenty twenty three"),
    ("No. 5", "number five"), ("#5", "number five"), ("No. I said", "no. i said"),
    ("mp3", "mp three"), ("10am", "ten am"), ("5km", "five kilometers"), ("1 km", "one kilometer"),
    ("5 ft", "five feet"), ("100 mph", "one hundred miles per hour"), ("33 m²", "thirty three square meters"),
    ("+3 goals", "plus three goals"), ("(−5)", "(minus five)"),
    ("Dr. Patel?", "doctor patel?"), ("Elm Dr.", "elm drive"), ("St Louis", "saint louis"),
    ("the sun.", "the sun."), ("sun., jan. 5", "sunday, january fifth"), ("5 ms", "five milliseconds"),
    ("the U.S. Army", "the us army"), ("e.g. c.d", "eg cd"), ("3 kids & 2 dogs", "three kids  and  two dogs"),
])
def test_known_answers(text, expected):
    assert read(text) == expected


@pytest.mark.parametrize("written, spoken", [
    ("3 apples", "three apples"),
    ("$12.50", "12.50 dollars"), ("$12.50", "twelve dollars and fifty cents"), ("$12.50", "12 dollars 50 cents"),
    ("30%", "30 percent"), ("30%", "thirty per cent"),
    ("25°C", "25 degrees Celsius"), ("25°C", "25 ° C"), ("25°C", "twenty-five degrees centigrade"),
    ("-5°C", "minus 5 degrees C"),
    ("70°F", "70 degrees F"),
    ("5 km", "5 kilometers"), ("5 km", "five kilometres"), ("5km", "5 km"),
    ("Dr. Moreau", "Doctor Moreau"),
    ("7:45 pm", "7.45 p.m."), ("7:45 pm", "seven forty-five PM"), ("7:45 pm", "7:45 P. M."),
    ("March 3, 2024", "March 3rd, 2024"), ("March 3, 2024", "March third, twenty twenty-four"),
    ("March 3, 2024", "March 3, two thousand and twenty-four"),
    ("21st", "twenty-first"), ("1887", "eighteen eighty-seven"),
    ("1,500 dollars", "$1,500"), ("1,500 dollars", "$1500"), ("1,500 dollars", "1500 dollars"),
    ("1,500 dollars", "one thousand five hundred dollars"),
    ("-5°C", "minus 5 degrees Celsius"), ("-5°C", "negative five degrees celsius"),
    ("40 km/h", "40 kilometers per hour"),
    ("Mr. and Mrs. Okafor", "Mister and Missus Okafor"), ("Mr. and Mrs. Okafor", "Mr and Mrs Okafor"),
    ("Elm St., next", "Elm Street, next"), ("St. Mary's", "Saint Mary's"),
    ("your ID, etc.", "your ID, et cetera."),
    ("3.5 cups", "three point five cups"),
    ("12/05/2023", "December 5th, 2023"),
    ("€20", "20 euros"), ("10 kg", "10 kilograms"),
    ("moved to Mon., Jan. 8.", "moved to Monday, January 8th."),
    ("Prof. Adeyemi", "Professor Adeyemi"),
    ("2nd floor", "second floor"),
    ("10 am", "10 a.m."), ("10 am", "10am"), ("10 am", "ten AM"),
    ("£450,000", "450,000 pounds"), ("£450,000", "four hundred and fifty thousand pounds"),
    ("250 ml", "250 milliliters"), ("2 tbsp", "two tablespoons"),
    ("Gen. Harlow and Lt. Brooks", "General Harlow and Lieutenant Brooks"),
    ("$2.4 million", "2.4 million dollars"), ("$2.4 million", "$2.4M"),
    ("2 TB", "2 terabytes"),
    ("$7.99", "7 dollars 99 cents"), ("$1.25", "one dollar and twenty-five cents"),
    ("350", "three hundred and fifty"), ("a hundred people", "100 people"),
    ("1990s", "nineteen nineties"), ("the '90s", "the nineties"),
    ("0.5", "point five"), ("0.5", "zero point five"),
    ("6:05 am", "six oh five a.m."), ("7:00 pm", "7 pm"),
    ("1/2 cup", "one half cup"), ("3/4", "three quarters"), ("1 1/2", "one and a half"),
    ("No. 5", "number 5"), ("#5", "number five"),
    ("U.S.", "US"), ("10-20 km", "10 to 20 kilometers"), ("$0.99", "99 cents"),
    ("2005", "two thousand and five"), ("2,024 apples", "2024 apples"),
    ("salt & pepper", "salt and pepper"), ("mp3", "MP3"),
    ("9:30 am", "9:30 a.m."), ("85°C", "85 degrees Celsius"), ("$4", "four dollars"),
    ("1°", "one degree"), ("1 kg", "one kilogram"), ("5 ft", "five feet"),
    ("100 mph", "100 miles per hour"), ("1905", "nineteen oh five"), ("2.5%", "two point five percent"),
])
def test_equal_after_reading(written, spoken):
    assert norm(written) == norm(spoken)


@pytest.mark.parametrize("written, wrong", [
    ("3 apples", "4 apples"), ("13", "30"), ("$12.50", "$12.15"), ("7:45 pm", "7:45 am"),
    ("21st", "22nd"), ("1887", "1878"), ("30%", "30°"), ("5 km", "5 kg"), ("March 3", "March 4"),
    ("2.5", "25"), ("-5", "5"), ("St. Mary's", "Elm St."), ("1/2", "1/4"), ("3 apples", "three apple"),
    ("1,500", "fifteen hundred"),  # documented: not equal
])
def test_wrong_reading_stays_different(written, wrong):
    assert norm(written) != norm(wrong)


@pytest.mark.parametrize("text", [
    "Thank you.", "three apples", "twenty twenty four", "seven forty five pm", "I am here.",
    "Twelfth-month frosts", "the sun.", "they wed.", "a-b: cd.", "march on",
])
def test_text_without_digits_or_abbreviations_unchanged(text):
    assert read(text) == prep(text)


def test_suite_digit_free_and_idempotent():
    for text in suite_texts():
        once = read(text)
        assert not re.search(r"\d", once), (text, once)
        assert read_numbers(once) == once, text
        full = norm(text)
        assert norm(full) == full, text


def test_stdlib_only():
    source = Path(english_numbers.__file__).read_text(encoding="utf-8")
    imports = set(re.findall(r"^(?:from|import) (\w+)", source, re.MULTILINE))
    assert imports <= {"__future__", "re"}
