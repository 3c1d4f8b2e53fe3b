"""Known answers for the Korean number reader (evalkit.korean_numbers)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from evalkit.korean_numbers import VERSION, native, native_noun, read_numbers, sino, spans
from evalkit.textnorm import normalize

SUITE = Path(__file__).resolve().parents[1] / "suites" / "ko-base" / "utterances.jsonl"


def prep(text: str) -> str:
    """What the caller hands over: NFKC + casefold, punctuation still there."""
    return unicodedata.normalize("NFKC", text).casefold()


def read(text: str) -> str:
    return read_numbers(prep(text))


def nospace(text: str) -> str:
    return read(text).replace(" ", "")


def suite_texts() -> list[str]:
    lines = SUITE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def test_version_is_part_of_the_normalizer_version(monkeypatch):
    """Bumping this reader's VERSION changes textnorm.VERSION, which every run records (and compare
    checks), so transcripts normalized by different readers are never silently compared."""
    import importlib.util

    from evalkit import korean_numbers, textnorm

    def fresh_textnorm():  # executed anew, not registered in sys.modules
        spec = importlib.util.find_spec("evalkit.textnorm")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    assert fresh_textnorm().VERSION == textnorm.VERSION
    monkeypatch.setattr(korean_numbers, "VERSION", VERSION + ".1")
    assert fresh_textnorm().VERSION != textnorm.VERSION


@pytest.mark.parametrize("n, expected", [
    (0, "영"), (1, "일"), (10, "십"), (11, "십일"), (100, "백"), (110, "백십"), (1500, "천오백"),
    (2024, "이천이십사"), (10000, "만"), (20000, "이만"), (10320, "만 삼백이십"),
    (29900, "이만 구천구백"), (200000, "이십만"), (100000000, "일억"), (100010000, "일억 일만"),
    (1234567890, "십이억 삼천사백오십육만 칠천팔백구십"),
])
def test_sino_cardinal(n, expected):
    assert sino(n) == expected


@pytest.mark.parametrize("n, expected", [
    (1, "한"), (2, "두"), (3, "세"), (4, "네"), (10, "열"), (20, "스무"), (21, "스물한"),
    (25, "스물다섯"), (99, "아흔아홉"), (100, "백"), (0, "영"),
])
def test_native_attributive(n, expected):
    assert native(n) == expected


@pytest.mark.parametrize("text, expected", [
    # bare numbers and thousands separators
    ("1500", "천오백"), ("1,500", "천오백"), ("20000", "이만"), ("10", "십"), ("0", "영"),
    # native counters (ko-base fragments)
    ("3개 주세요.", "세 개 주세요."),
    ("삼각김밥 2개랑 바나나우유 1개를 샀다.", "삼각김밥 두 개랑 바나나우유 한 개를 샀다."),
    ("학생이 모두 25명 있었는데 3명이 결석했다.", "학생이 모두 스물다섯 명 있었는데 세 명이 결석했다."),
    ("10명", "열 명"), ("21살", "스물한 살"),
    ("공식 문서에는 20세로, 친구들 사이에서는 20살로 통한다.",
     "공식 문서에는 이십 세로, 친구들 사이에서는 스무 살로 통한다."),
    ("우리 아들은 올해 12살이고 딸은 9살이에요.", "우리 아들은 올해 열두 살이고 딸은 아홉 살이에요."),
    ("고양이 2마리와 강아지 1마리", "고양이 두 마리와 강아지 한 마리"),
    ("커피 4잔과 케이크 2조각", "커피 네 잔과 케이크 두 조각"),
    ("사과 1상자를", "사과 한 상자를"),
    ("매일 아침 1시간씩", "매일 아침 한 시간씩"),
    ("2시간 이상", "두 시간 이상"),
    ("새벽 4시에 일어났어요.", "새벽 네 시에 일어났어요."),
    ("어머, 벌써 12시가 다 됐네!", "어머, 벌써 열두 시가 다 됐네!"),
    ("손님이 100명 넘게", "손님이 백 명 넘게"),
    ("하루에 100번씩", "하루에 백 번씩"),
    ("벌써 3번이나 읽었지만", "벌써 세 번이나 읽었지만"),
    ("1번째와 11번째", "첫 번째와 열한 번째"),
    ("3달", "세 달"),
    # 번 / 대: count vs label vs score
    ("2번 버스를 타고 가다가 2번 갈아탔어요.", "이 번 버스를 타고 가다가 두 번 갈아탔어요."),
    ("우리 팀은 3대 1로 이겼다!", "우리 팀은 삼 대 일로 이겼다!"),
    ("주차장에 차가 3대밖에 없네요.", "주차장에 차가 세 대밖에 없네요."),
    ("19대 대통령", "십구 대 대통령"),
    # Sino counters, months, longer counters beating native prefixes
    ("2024년 3월 15일부터", "이천이십사 년 삼월 십오 일부터"),
    ("1945년 8월 15일,", "천구백사십오 년 팔월 십오 일,"),
    ("올해 6월과 10월에는", "올해 유월과 시월에는"),
    ("마감은 12월 31일 자정", "마감은 십이월 삼십일 일 자정"),
    ("매달 1일에는", "매달 일 일에는"),
    ("걸어서 5분밖에", "걸어서 오 분밖에"),
    ("3개월", "삼 개월"), ("5달러", "오 달러"), ("2시즌", "이 시즌"),
    ("15층까지", "십오 층까지"), ("지하철 2호선이", "지하철 이 호선이"),
    ("1등을 한 학생", "일 등을 한 학생"), ("올해 85세이신데도", "올해 팔십오 세이신데도"),
    ("6·25 전쟁이 일어난 지 70년이 넘었다.", "육이오 전쟁이 일어난 지 칠십 년이 넘었다."),
    ("1,000부만", "천 부만"),
    # money and written multipliers
    ("아메리카노가 2,500원이래요.", "아메리카노가 이천오백 원이래요."),
    ("청바지 한 벌에 29,900원밖에", "청바지 한 벌에 이만 구천구백 원밖에"),
    ("시간당 10,320원으로", "시간당 만 삼백이십 원으로"),
    ("월세는 50만 원입니다.", "월세는 오십만 원입니다."),
    ("하루 평균 20만 명이", "하루 평균 이십만 명이"),
    ("1만 원", "만 원"), ("5천만 원", "오천만 원"), ("1.5억 원", "일 점 오억 원"),
    ("$5", "오 달러"),
    # clock times
    ("오늘 오후 3시 30분에", "오늘 오후 세 시 삼십 분에"),
    ("3:30", "세 시 삼십 분"), ("10:00", "열 시"), ("3시30분", "세 시 삼십 분"),
    ("10시 10분 기차", "열 시 십 분 기차"),
    ("9시에서 11시 사이에", "아홉 시에서 열한 시 사이에"),
    ("2시간 40분쯤", "두 시간 사십 분쯤"),
    ("16:9 화면", "십육 대 구 화면"),
    # decimals
    ("3.5", "삼 점 오"), ("0.5", "영 점 오"),
    ("무게가 1.2kg밖에", "무게가 일 점 이 킬로그램밖에"),
    ("성장률이 2.1%로", "성장률이 이 점 일 퍼센트로"),
    ("할인 가격은 6.25달러입니다.", "할인 가격은 육 점 이오 달러입니다."),
    # phone numbers and digit strings
    ("휴대폰 번호는 010-1234-5678로", "휴대폰 번호는 공일공 일이삼사 오육칠팔로"),
    ("1588-1234", "일오팔팔 일이삼사"), ("007", "공공칠"),
    # middle-dot dates
    ("3·1절에는", "삼일절에는"), ("4·19", "사일구"), ("6·10", "육십"),
    ("2024-03-15", "이천이십사 년 삼월 십오 일"),
    # units and symbols
    ("무려 30%!", "무려 삼십 퍼센트!"), ("15%나", "십오 퍼센트나"), ("3%p", "삼 퍼센트포인트"),
    ("최고 기온은 33°C까지", "최고 기온은 삼십삼 도까지"), ("25℃", "이십오 도"),
    ("냉장고 온도는 3°C, 냉동실은 -18°C로", "냉장고 온도는 삼 도, 냉동실은 영하 십팔 도로"),
    ("-5", "마이너스 오"),
    ("약 12km이고", "약 십이 킬로미터이고"), ("1L에 1,700원", "일 리터에 천칠백 원"),
    ("단백질이 30g이나", "단백질이 삼십 그램이나"), ("방 넓이는 33m²이고", "방 넓이는 삼십삼 제곱미터이고"),
    ("５ＫＧ", "오 킬로그램"), ("2m", "이 미터"), ("15cm", "십오 센티미터"), ("500ml", "오백 밀리리터"),
    # ranges
    ("강수량은 10~40mm로", "강수량은 십에서 사십 밀리미터로"), ("3~5", "삼에서 오"),
    ("3~5개", "세 개에서 다섯 개"), ("2~3명", "두세 명"), ("9시~11시", "아홉 시에서 열한 시"),
    # readings decided by context (docs/korean.md)
    ("20대 여성", "이십 대 여성"), ("차 20대", "차 스무 대"), ("정답은 3번", "정답은 삼 번"),
    ("제1장", "제일 장"), ("제3권", "제삼 권"), ("24시 편의점", "이십사 시 편의점"), ("18시", "열여덟 시"),
    ("인증번호 4827", "인증번호 사팔이칠"), ("010 1234 5678", "공일공 일이삼사 오육칠팔"),
    ("3.1절", "삼일절"), ("12·12 사태", "십이십이 사태"), ("8.15 광복절", "팔일오 광복절"),
    ("사과 3 개를", "사과 세 개를"), ("3 시민", "삼 시민"), ("101명", "백일 명"),
    # Latin stays Latin
    ("KTX로 2시간", "ktx로 두 시간"), ("10분 전에 USB를", "십 분 전에 usb를"), ("mp3 파일", "mp3 파일"),
])
def test_known_answers(text, expected):
    assert read(text) == expected


@pytest.mark.parametrize("written, spoken", [
    ("3개", "세 개"),
    ("2024년", "이천이십사 년"),
    ("오후 3시 30분", "오후 세 시 삼십 분"),
    ("오후 3:30", "오후 세 시 삼십 분"),
    ("6월", "유월"),
    ("10월", "시월"),
    ("1,500원", "천오백 원"),
    ("30%", "삼십 퍼센트"),
    ("25°C", "이십오 도"),
    ("010-1234-5678", "공일공 일이삼사 오육칠팔"),
    ("6·25 전쟁", "육이오 전쟁"),
    ("20살", "스무 살"),
    ("2024년", "2천24년"),  # Whisper mixes digits and written multipliers
])
def test_equal_after_reading(written, spoken):
    assert nospace(written) == nospace(spoken)


@pytest.mark.parametrize("written, wrong", [
    ("3개", "삼 개"),
    ("10월", "십 월"),
    ("6월", "육 월"),
    ("3시", "삼 시"),
    ("20살", "이십 살"),
    ("2번 갈아탔어요", "이 번 갈아탔어요"),
    ("2024년", "이천이십 년"),
])
def test_wrong_reading_stays_different(written, wrong):
    assert nospace(written) != nospace(wrong)


@pytest.mark.parametrize("text", [
    "감사합니다.", "같이 가요!", "국물이 너무 짜서 물을 두 잔이나 마셨다.", "KTX 탔어?",
    "세 시 삼십 분", "이천이십사 년 유월", "좋아요~", "a-b: c.d",
])
def test_text_without_digits_unchanged(text):
    assert read(text) == prep(text)


def test_suite_idempotent_and_digit_free():
    for text in suite_texts():
        once = read(text)
        assert read_numbers(once) == once, text
        assert not re.search(r"\d", once), (text, once)
        full = normalize(once, "ko")
        assert normalize(read_numbers(prep(full)), "ko") == full, text


@pytest.mark.parametrize("text, readings", [
    ("25명", ("스물다섯 명", "이십오 명")),
    ("20명", ("스무 명", "이십 명")),
    ("19명", ("열아홉 명",)),
    ("20살", ("스무 살",)),
    ("101명", ("백일 명", "백한 명")),
    ("3달", ("세 달", "석 달")),
    ("18시", ("열여덟 시", "십팔 시")),
    ("3시", ("세 시",)),
    ("24시 편의점", ("이십사 시",)),
    ("3:30", ("세 시 삼십 분", "세 시 반")),
    ("-18°c", ("영하 십팔 도", "마이너스 십팔 도", "섭씨 영하 십팔 도", "섭씨 마이너스 십팔 도")),
    ("-5", ("마이너스 오",)),
    ("30%", ("삼십 퍼센트", "삼십 프로")),
    ("3%p", ("삼 퍼센트포인트", "삼 포인트")),
    ("12km", ("십이 킬로미터", "십이 킬로")),
    ("10,320원", ("만 삼백이십 원", "일만 삼백이십 원")),
    ("1만", ("만", "일만")),
    ("1억", ("일억",)),
    ("2~3명", ("두세 명", "두 명에서 세 명", "둘에서 세 명")),
    ("4~5개", ("네댓 개", "너덧 개", "네 개에서 다섯 개", "넷에서 다섯 개")),
    ("2~3일", ("이에서 삼 일", "이 일에서 삼 일", "이삼 일")),
    ("007", ("공공칠", "영영칠")),
    ("인증번호 4827", ("사팔이칠",)),
    ("방 번호 302", ("삼공이", "삼영이", "삼백이")),
    ("119에", ("일일구",)),
    ("472번 버스", ("사백칠십이 번", "사칠이 번")),
    ("1203호", ("천이백삼 호", "일이공삼 호", "일이영삼 호")),
    ("101동", ("백일 동",)),
    ("10편 넘게", ("열 편",)),
    ("2편을", ("두 편", "이 편")),
    ("1/3", ("삼분의 일",)),
    ("b2층", ("지하 이", "비 이", "비 투")),
    ("256gb", ("이백오십육 기가바이트", "이백오십육 기가")),
    ("010-1234-5678", ("공일공 일이삼사 오육칠팔", "공일공에 일이삼사에 오육칠팔", "영일영 일이삼사 오육칠팔",
                       "영일영에 일이삼사에 오육칠팔")),
    ("6월", ("유월",)),
    ("1번째", ("첫 번째",)),
    ("2번 출구", ("이 번",)),
    ("2번 갈아탔다", ("두 번",)),
])
def test_every_standard_reading(text, readings):
    found = spans(prep(text))
    assert len(found) == 1, found
    assert found[0].readings == readings


def test_native_noun():
    assert [native_noun(n) for n in (1, 3, 10, 20, 21, 99)] == ["하나", "셋", "열", "스물", "스물하나", "아흔아홉"]


def test_spans_cover_the_number_only():
    text = prep("사과 3개랑 배 10개")
    assert [(text[s.start:s.end], s.readings[0]) for s in spans(text)] == [("3개", "세 개"), ("10개", "열 개")]
    assert spans(prep("3시30분"))[0].readings == ("세 시 ",)  # adjacent numbers stay apart
