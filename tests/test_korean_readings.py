"""Korean reading-equivalence CER (evalkit.korean_readings): a table of (suite text, transcript,
expected edits) written from Korean grammar (표준어 규정, 표준 발음법, 한글 맞춤법 and the
dictionary's forms; docs/korean.md), not from the code's output, and the same table through
kocer, the peer package, side by side.

expected: 0 = a correct reading (CER 0 against the chosen reading); an int = a wrong reading
with exactly that many character edits against the closest correct reading; E = wrong, count
not pinned (CER > 0).
kocer: how kocer 0.4.0 classifies the pair, when it differs from the grammar:
  agree    kocer also scores it correct / wrong (default)
  lenient  kocer scores 0 a reading the grammar calls wrong (20살 as 이십 살, label 2번 as 두 번)
  stricter we reject on purpose a reading kocer accepts, where the norm is ours to choose
           (a spelling variant, a non-standard form in use); docs/korean.md says why
  misses   kocer scores > 0 a standard reading that it does not know (3.1절 as 삼일절)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from evalkit import korean_readings
from evalkit.korean_readings import Choice, Readings, best, first_reading, readings
from evalkit.textnorm import cer_form, normalize

E = "E"
SUITES = Path(__file__).resolve().parents[1] / "suites"

# (suite text, transcript, expected, kocer)
TABLE: list[tuple[str, str, int | str, str]] = [
    # --- native counters: attributive native numerals 한/두/세/네/스무 (numbers_native) ---
    ("사과 3개 주세요", "사과 세 개 주세요", 0, "agree"),
    ("사과 3개 주세요", "사과 삼 개 주세요", 1, "agree"),
    ("사과 3개 주세요", "사과 3개 주세요", 0, "agree"),  # correct, but unverified
    ("사과 3개 주세요", "사과 3 개 주세요", 0, "agree"),
    ("사과 3개 주세요", "사과 셋 개 주세요", 1, "lenient"),  # 셋 is the noun form, not before a counter
    ("사과 3개 주세요", "사과 4개 주세요", 1, "agree"),
    ("학생 10명", "학생 열 명", 0, "agree"),
    ("학생 10명", "학생 십 명", 1, "agree"),  # Sino only from 20 up
    ("25명이 왔다", "스물다섯 명이 왔다", 0, "agree"),
    ("25명이 왔다", "이십오 명이 왔다", 0, "agree"),  # both systems for people from 20 up
    ("25명이 왔다", "이십다섯 명이 왔다", 2, "agree"),  # mixed systems
    ("25명이 왔다", "35명이 왔다", 1, "agree"),
    ("고양이 2마리", "고양이 두 마리", 0, "agree"),
    ("고양이 2마리", "고양이 이 마리", 1, "agree"),
    ("20살", "스무 살", 0, "agree"),
    ("20살", "스물 살", 1, "lenient"),  # 스물 is the noun; before a counter 스무
    ("20살", "이십 살", 2, "lenient"),  # 살 is native only (이십 세 is written with 세)
    ("21살", "스물한 살", 0, "agree"),
    ("21살", "이십일 살", 3, "lenient"),
    ("올해 85세", "올해 팔십오 세", 0, "agree"),
    ("올해 85세", "올해 여든다섯 세", 4, "agree"),  # 세 (歲) is Sino
    ("커피 4잔", "커피 네 잔", 0, "agree"),
    ("커피 4잔", "커피 넉 잔", 1, "agree"),  # 넉 only before 달, 냥, 되, 섬, 자
    ("3달 동안", "세 달 동안", 0, "agree"),
    ("3달 동안", "석 달 동안", 0, "misses"),  # 석 달: the dictionary's form
    ("1번째 손님", "첫 번째 손님", 0, "agree"),
    ("1번째 손님", "한 번째 손님", 1, "lenient"),  # the first is 첫 번째
    ("11번째", "열한 번째", 0, "agree"),
    ("100명", "백 명", 0, "agree"),
    ("101명", "백한 명", 0, "misses"),  # native numerals end at 99: Sino hundreds + native rest
    ("101명", "백일 명", 0, "agree"),
    ("책 2권", "책 두 권", 0, "agree"),
    ("책 2권", "책 이 권", 1, "agree"),
    ("종이 5장", "종이 다섯 장", 0, "agree"),
    ("하루 1시간씩", "하루 한 시간씩", 0, "agree"),
    ("하루 1시간씩", "하루 일 시간씩", 1, "agree"),
    ("24시간 영업", "스물네 시간 영업", 0, "agree"),
    ("24시간 영업", "이십사 시간 영업", 0, "agree"),
    ("배 3척", "배 세 척", 0, "agree"),
    ("영화를 10편 넘게 봤어", "영화를 열 편 넘게 봤어", 0, "agree"),
    ("영화를 10편 넘게 봤어", "영화를 십 편 넘게 봤어", 1, "agree"),  # a count: native
    ("해리포터 2편을 봤어", "해리포터 이 편을 봤어", 0, "misses"),  # a sequel's name: Sino too
    ("5배 빠른 속도", "오 배 빠른 속도", 0, "misses"),
    ("2배 빠른 속도", "이 배 빠른 속도", 1, "agree"),
    ("연필 12자루", "연필 열두 자루", 0, "agree"),
    ("연필 12자루", "연필 십이 자루", 2, "agree"),
    ("남은 건 0개", "남은 건 영 개", 0, "agree"),
    ("우리 아들은 12살이고 딸은 9살이에요", "우리 아들은 열두 살이고 딸은 아홉 살이에요", 0, "agree"),
    ("우리 아들은 12살이고 딸은 9살이에요", "우리 아들은 십이 살이고 딸은 구 살이에요", 4, "agree"),
    # --- Sino counters, dates and times (numbers_sino, dates_times) ---
    ("2024년", "이천이십사 년", 0, "agree"),
    ("2024년", "이공이사 년", 2, "lenient"),  # a year is a cardinal, not a code
    ("2024년", "2025년", 1, "agree"),
    ("3월 15일", "삼월 십오 일", 0, "agree"),
    ("6월", "유월", 0, "agree"),
    ("6월", "육월", 1, "agree"),  # 한글 맞춤법 제52항: 유월, 시월
    ("10월", "시월", 0, "agree"),
    ("10월", "십월", 1, "agree"),
    ("매달 1일", "매달 일 일", 0, "agree"),
    ("매달 1일", "매달 하루", 2, "agree"),
    ("오후 3시 30분", "오후 세 시 삼십 분", 0, "agree"),
    ("오후 3시 30분", "오후 삼 시 삼십 분", 1, "agree"),
    ("오후 3시 30분", "오후 세 시 서른 분", 2, "lenient"),  # minutes are Sino
    ("3:30에 만나요", "세 시 삼십 분에 만나요", 0, "agree"),
    ("3:30에 만나요", "세 시 반에 만나요", 0, "misses"),
    ("3:30에 만나요", "삼 시 삼십 분에 만나요", 1, "lenient"),
    ("18시에 출발", "열여덟 시에 출발", 0, "agree"),
    ("18시에 출발", "십팔 시에 출발", 0, "misses"),  # the 24-hour clock is also read Sino
    ("24시 편의점", "이십사 시 편의점", 0, "agree"),
    ("24시 편의점", "스물네 시 편의점", 3, "lenient"),  # a shop's name: 이십사 시
    ("0시 30분", "영 시 삼십 분", 0, "agree"),
    ("걸어서 5분", "걸어서 오 분", 0, "agree"),
    ("걸어서 5분", "걸어서 다섯 분", 2, "lenient"),  # minutes; 다섯 분 is five persons
    ("2.5초", "이 점 오 초", 0, "agree"),
    ("15층", "십오 층", 0, "agree"),
    ("15층", "열다섯 층", 3, "agree"),
    ("지하철 2호선", "지하철 이 호선", 0, "agree"),
    ("지하철 2호선", "지하철 두 호선", 1, "agree"),
    ("3개월", "삼 개월", 0, "agree"),
    ("3개월", "세 개월", 1, "stricter"),  # 개월 (個月) is Sino; the native word is 석 달
    ("1등", "일 등", 0, "agree"),
    ("1등", "한 등", 1, "agree"),
    ("2학년", "이 학년", 0, "agree"),
    ("1945년 8월 15일", "천구백사십오 년 팔월 십오 일", 0, "agree"),
    ("1945년 8월 15일", "천구백사십오 년 여덟 월 십오 일", 2, "agree"),
    ("2024-03-15", "이천이십사 년 삼월 십오 일", 0, "misses"),
    ("2024.3.15.", "이천이십사 년 삼월 십오 일", 0, "misses"),
    ("10시 10분 기차", "열 시 십 분 기차", 0, "agree"),
    ("10시 10분 기차", "십 시 십 분 기차", 1, "agree"),
    ("9시에서 11시 사이", "아홉 시에서 열한 시 사이", 0, "agree"),
    # --- money and large numbers ---
    ("1,500원", "천오백 원", 0, "agree"),
    ("1,500원", "일천오백 원", 1, "agree"),  # 1 is silent before 천
    ("10,320원", "만 삼백이십 원", 0, "agree"),
    ("10,320원", "일만 삼백이십 원", 0, "misses"),  # a leading 만 may take 일
    ("10,320원", "만 삼백이 원", 1, "agree"),
    ("29,900원", "이만 구천구백 원", 0, "agree"),
    ("50만 원", "오십만 원", 0, "agree"),
    ("1만 원", "만 원", 0, "agree"),
    ("1만 원", "일만 원", 0, "agree"),
    ("1만 원", "한만 원", 1, "lenient"),
    ("5천만 원", "오천만 원", 0, "agree"),
    ("3억 5천만 원", "삼억 오천만 원", 0, "agree"),
    ("1억 원", "일억 원", 0, "agree"),
    ("1억 원", "억 원", 1, "lenient"),  # 일억: 1 is said before 억
    ("$5", "오 달러", 0, "agree"),
    ("6.25달러", "육 점 이오 달러", 0, "agree"),
    ("6.25달러", "육이오 달러", 1, "agree"),
    ("2,500원", "이천오백 원", 0, "agree"),
    ("2,500원", "두천오백 원", 1, "agree"),
    # --- decimals, units, symbols (symbols_units) ---
    ("3.5kg", "삼 점 오 킬로그램", 0, "agree"),
    ("3.5kg", "삼 점 오 킬로", 0, "agree"),  # 킬로: the dictionary's clipped form
    ("3.5kg", "세 점 오 킬로그램", 1, "agree"),
    ("12km", "십이 킬로미터", 0, "agree"),
    ("12km", "십이 키로", 1, "stricter"),  # 키로 is a misspelling of 킬로
    ("30%", "삼십 퍼센트", 0, "agree"),
    ("30%", "삼십 프로", 0, "agree"),
    ("30%", "서른 퍼센트", 2, "agree"),
    ("2.1%", "이 점 일 퍼센트", 0, "agree"),
    ("3%p", "삼 퍼센트포인트", 0, "misses"),
    ("3%p", "삼 포인트", 0, "misses"),
    ("25°C", "이십오 도", 0, "agree"),
    ("25°C", "섭씨 이십오 도", 0, "agree"),  # ℃ stands for 섭씨 ... 도
    ("25°", "섭씨 이십오 도", 2, "stricter"),  # a bare degree names no scale
    ("-18°C", "영하 십팔 도", 0, "agree"),
    ("-18°C", "마이너스 십팔 도", 0, "agree"),
    ("-18°C", "십팔 도", 2, "agree"),  # the sign dropped
    ("-5", "마이너스 오", 0, "agree"),
    ("33m²", "삼십삼 제곱미터", 0, "misses"),
    ("33m²", "삼십삼 평방미터", 0, "misses"),
    ("우유 1L에", "우유 일 리터에", 0, "misses"),
    ("용량이 256GB예요", "용량이 이백오십육 기가예요", 0, "misses"),
    ("아기 몸무게가 4.2kg으로 늘었다",
     "아기 몸무게가 사 점 이 킬로로 늘었다", 0, "misses"),  # the particle follows the unit said
    ("아기 몸무게가 4.2kg으로 늘었다", "아기 몸무게가 사 점 이 킬로으로 늘었다", 1, "lenient"),
    ("전체의 1/3이 결석했다", "전체의 삼분의 일이 결석했다", 0, "misses"),
    ("주차장은 B2층에 있습니다", "주차장은 지하 이 층에 있습니다", 0, "misses"),
    ("1, 2, 3 하면 뛰어", "하나 둘 셋 하면 뛰어", 0, "agree"),  # counting aloud
    ("30g", "삼십 그램", 0, "agree"),
    ("500ml", "오백 밀리리터", 0, "agree"),
    ("15cm", "십오 센티", 0, "agree"),
    ("25°C", "스물다섯 도", 4, "agree"),
    # --- codes, PINs and phone numbers: digit by digit, 0 as 공 or 영 ---
    ("인증번호 4827을 입력하세요", "인증번호 사팔이칠을 입력하세요", 0, "agree"),
    ("인증번호 4827을 입력하세요",
     "인증번호 사천팔백이십칠을 입력하세요", 3, "stricter"),  # a code is read digit by digit
    ("방 번호는 302예요", "방 번호는 삼공이예요", 0, "agree"),
    ("방 번호는 302예요", "방 번호는 삼백이예요", 0, "agree"),  # after a plain 번호 a cardinal too
    ("불이 나면 바로 119에 신고하세요", "불이 나면 바로 일일구에 신고하세요", 0, "agree"),
    ("불이 나면 바로 119에 신고하세요", "불이 나면 바로 백십구에 신고하세요", 2, "lenient"),  # 119 is dialled
    ("인증번호 4827을 입력하세요", "인증번호 사팔이팔을 입력하세요", 1, "agree"),
    ("비밀번호는 0915입니다", "비밀번호는 공구일오입니다", 0, "agree"),
    ("비밀번호는 0915입니다", "비밀번호는 영구일오입니다", 0, "agree"),
    ("비밀번호는 0915입니다", "비밀번호는 구일오입니다", 1, "agree"),  # the zero dropped
    ("010-1234-5678로 연락 주세요", "공일공 일이삼사 오육칠팔로 연락 주세요", 0, "agree"),
    ("010-1234-5678로 연락 주세요", "공일공에 일이삼사에 오육칠팔로 연락 주세요", 0, "misses"),
    ("010-1234-5678로 연락 주세요", "영일영 일이삼사 오육칠팔로 연락 주세요", 0, "agree"),
    ("010 1234 5678", "공일공 일이삼사 오육칠팔", 0, "agree"),
    ("010 1234 5678", "010-1234-5678", 0, "agree"),
    ("010-1234-5678", "공일공 일이삼사 오육칠구", 1, "agree"),
    ("010-1234-5678", "공일공 천이백삼십사 오천육백칠십팔", E, "lenient"),  # groups of a phone number are digits
    ("1588-1234", "일오팔팔 일이삼사", 0, "agree"),
    ("007 영화", "공공칠 영화", 0, "agree"),
    ("우편번호 04524", "우편번호 공사오이사", 0, "agree"),
    # --- named dates: 3·1절, 6·25, 12·12 ---
    ("3·1절", "삼일절", 0, "agree"),
    ("3.1절 기념식", "삼일절 기념식", 0, "misses"),
    ("3.1절 기념식", "삼 점 일 절 기념식", 1, "lenient"),
    ("6·25 전쟁", "육이오 전쟁", 0, "agree"),
    ("6·25 전쟁", "육이십오 전쟁", 1, "lenient"),
    ("12·12 사태", "십이십이 사태", 0, "agree"),
    ("5·18 민주화운동", "오일팔 민주화운동", 0, "agree"),
    ("4·19 혁명", "사일구 혁명", 0, "agree"),
    ("8.15 광복절", "팔일오 광복절", 0, "misses"),
    ("6·10 민주항쟁", "육십 민주항쟁", 0, "agree"),
    # --- ranges ---
    ("2~3명", "두세 명", 0, "agree"),
    ("2~3명", "두 명에서 세 명", 0, "misses"),
    ("2~3명", "두 세 명", 0, "agree"),  # spacing is free
    ("2~3명", "이삼 명", 2, "agree"),
    ("3~4개", "서너 개", 0, "misses"),
    ("3~4개", "세네 개", 2, "lenient"),  # 세네 is not standard (서너)
    ("3~5개", "세 개에서 다섯 개", 0, "misses"),
    ("3~5개", "셋에서 다섯 개", 0, "misses"),
    ("3~5개", "세에서 다섯 개", 1, "agree"),  # 세 (attributive) takes no particle
    ("강수량은 10~40mm로", "강수량은 십에서 사십 밀리미터로", 0, "misses"),
    ("강수량은 10~40mm로", "강수량은 십 밀리에서 사십 밀리로", 0, "misses"),
    ("9시~11시", "아홉 시에서 열한 시", 0, "misses"),
    ("9시~11시", "구 시에서 십일 시", E, "agree"),
    # --- 대: age group, rank, machines, scores ---
    ("20대 여성", "이십 대 여성", 0, "agree"),
    ("20대 여성", "스무 대 여성", 2, "lenient"),  # an age group is Sino
    ("30대 초반", "삼십 대 초반", 0, "agree"),
    ("10대 청소년", "십 대 청소년", 0, "agree"),
    ("10대 청소년", "열 대 청소년", 1, "lenient"),
    ("40~50대 시청자", "사오십 대 시청자", 0, "misses"),
    ("차 20대가 서 있다", "차 스무 대가 서 있다", 0, "agree"),
    ("차가 3대밖에 없네요", "차가 세 대밖에 없네요", 0, "agree"),
    ("차가 3대밖에 없네요", "차가 삼 대밖에 없네요", 1, "lenient"),
    ("우리 팀은 3대 1로 이겼다", "우리 팀은 삼 대 일로 이겼다", 0, "agree"),
    ("우리 팀은 3대 1로 이겼다", "우리 팀은 세 대 일로 이겼다", 1, "lenient"),  # a score is Sino
    ("우리 팀은 3 대 1로 이겼다", "우리 팀은 삼 대 일로 이겼다", 0, "agree"),
    ("19대 대통령", "십구 대 대통령", 0, "agree"),
    ("19대 대통령", "열아홉 대 대통령", 3, "lenient"),
    # --- 번: label or count ---
    ("정답은 3번입니다", "정답은 삼 번입니다", 0, "agree"),
    ("정답은 3번입니다", "정답은 세 번입니다", 1, "lenient"),
    ("2번 출구로 나가세요", "이 번 출구로 나가세요", 0, "agree"),
    ("2번 출구로 나가세요", "두 번 출구로 나가세요", 1, "lenient"),
    ("2번 버스", "이 번 버스", 0, "agree"),
    ("472번 버스", "사칠이 번 버스", 0, "misses"),  # a bus number of three digits: digit by digit too
    ("472번 버스", "사백칠십이 번 버스", 0, "agree"),
    ("302호로 오세요", "삼공이 호로 오세요", 0, "misses"),
    ("3번이나 읽었다", "세 번이나 읽었다", 0, "agree"),
    ("3번이나 읽었다", "삼 번이나 읽었다", 1, "lenient"),
    ("하루에 100번씩", "하루에 백 번씩", 0, "agree"),
    ("2번 버스를 타고 가다가 2번 갈아탔어요", "이 번 버스를 타고 가다가 두 번 갈아탔어요", 0, "agree"),
    ("2번 버스를 타고 가다가 2번 갈아탔어요", "두 번 버스를 타고 가다가 이 번 갈아탔어요", 2, "lenient"),
    # --- 제 ordinals ---
    ("제1장", "제일 장", 0, "agree"),
    ("제1장", "제한 장", 1, "lenient"),
    ("제3권", "제삼 권", 0, "misses"),
    ("제3권", "제세 권", 1, "lenient"),
    ("제2차 세계 대전", "제이 차 세계 대전", 0, "agree"),
    # --- a counter written apart ---
    ("3 개", "세 개", 0, "agree"),
    ("3 개", "삼 개", 1, "agree"),
    ("사과 3 개를 샀다", "사과 세 개를 샀다", 0, "agree"),
    ("5 명이 왔다", "다섯 명이 왔다", 0, "agree"),
    # --- Latin acronyms, either script on either side ---
    ("KBS 뉴스", "케이비에스 뉴스", 0, "agree"),
    ("KBS 뉴스", "KBS 뉴스", 0, "agree"),
    ("KBS 뉴스", "kbs 뉴스", 0, "agree"),
    ("케이비에스 뉴스", "KBS 뉴스", 0, "agree"),
    ("KBS 뉴스", "MBC 뉴스", E, "agree"),
    ("AI가 정리해 줍니다", "에이아이가 정리해 줍니다", 0, "agree"),
    ("AI가 정리해 줍니다", "에이가 정리해 줍니다", 2, "agree"),
    ("USB에 저장", "유에스비에 저장", 0, "agree"),
    ("USB에 저장", "유에스피에 저장", 1, "agree"),
    ("KTX로 2시간", "케이티엑스로 두 시간", 0, "agree"),
    ("OECD 회원국", "오이시디 회원국", 0, "agree"),
    ("OECD 회원국", "오이씨디 회원국", 0, "agree"),
    ("PC방", "피씨방", 0, "agree"),
    ("QR 코드", "큐알 코드", 0, "agree"),
    ("QR 코드", "큐아르 코드", 0, "agree"),
    ("TV로 봤어요", "티브이로 봤어요", 0, "agree"),
    ("TV로 봤어요", "티비로 봤어요", 0, "misses"),
    ("NASA 발표", "나사 발표", 0, "agree"),
    ("새 iPhone은", "새 아이폰은", 0, "misses"),
    ("GDP 성장률", "지디피 성장률", 0, "agree"),
    ("SNS에 올린 사진", "에스엔에스에 올린 사진", 0, "agree"),
    ("mp3 파일", "엠피스리 파일", 0, "misses"),
    ("mp3 파일", "엠피쓰리 파일", 0, "agree"),
    ("mp3 파일", "엠피삼 파일", 0, "agree"),
    # --- no numbers: a dropped, added or changed syllable is always an error ---
    ("오늘은 날씨가 좋네요.", "오늘은 날씨가 좋네요", 0, "agree"),
    ("오늘은 날씨가 좋네요.", "오늘은 날씨가 좋아요", 1, "agree"),
    ("국물이 너무 짜요", "국물이 너무 자요", 1, "agree"),
    ("감사합니다", "감사합니다요", 1, "agree"),
    ("감사합니다", "감사니다", 1, "agree"),
    ("같이 가요!", "가치 가요", 2, "agree"),  # the spelling is compared, not the sound
    ("안녕하세요", "", 5, "agree"),
    ("정말요?! 네, 좋아요…", "정말요 네 좋아요", 0, "agree"),
    # --- whole suite sentences ---
    ("이번 달 전기 요금이 지난달보다 15%나 올랐어요.",
     "이번 달 전기 요금이 지난달보다 십오 프로나 올랐어요", 0, "agree"),
    ("우리 할머니는 올해 85세이신데도 매일 아침 1시간씩 산책을 하신다.",
     "우리 할머니는 올해 팔십오 세이신데도 매일 아침 한 시간씩 산책을 하신다", 0, "agree"),
    ("우리 할머니는 올해 85세이신데도 매일 아침 1시간씩 산책을 하신다.",
     "우리 할머니는 올해 여든다섯 세이신데도 매일 아침 한 시간씩 산책을 하신다", 4, "agree"),
    ("편의점에서 삼각김밥 2개랑 바나나우유 1개를 샀다.",
     "편의점에서 삼각김밥 두 개랑 바나나우유 한 개를 샀다", 0, "agree"),
    ("편의점에서 삼각김밥 2개랑 바나나우유 1개를 샀다.",
     "편의점에서 삼각김밥 이 개랑 바나나우유 일 개를 샀다", 2, "agree"),
    ("냉장고 온도는 3°C, 냉동실은 -18°C로 맞춰 두세요.",
     "냉장고 온도는 삼 도 냉동실은 마이너스 십팔 도로 맞춰 두세요", 0,
     "agree"),
    ("서울역에서 부산까지 KTX로 2시간 40분쯤 걸립니다.",
     "서울역에서 부산까지 케이티엑스로 두 시간 사십 분쯤 걸립니다", 0,
     "agree"),
    ("서울역에서 부산까지 KTX로 2시간 40분쯤 걸립니다.",
     "서울역에서 부산까지 케이티엑스로 두 시간 마흔 분쯤 걸립니다", 2,
     "lenient"),
    ("정부는 최저임금을 시간당 10,320원으로 올리기로 했으며, 이는 올해보다 2.9% 인상된 금액이다.",
     "정부는 최저임금을 시간당 일만 삼백이십 원으로 올리기로 했으며 이는 올해보다 이 점 구 프로 인상된 금액이다", 0,
     "misses"),
    ("공식 문서에는 20세로, 친구들 사이에서는 20살로 통한다.",
     "공식 문서에는 이십 세로 친구들 사이에서는 스무 살로 통한다", 0,
     "agree"),
    ("공식 문서에는 20세로, 친구들 사이에서는 20살로 통한다.",
     "공식 문서에는 스무 세로 친구들 사이에서는 이십 살로 통한다", 4,
     "agree"),
    ("교실에는 학생이 모두 25명 있었는데 3명이 결석했다.",
     "교실에는 학생이 모두 이십오 명 있었는데 세 명이 결석했다", 0, "agree"),
    ("교실에는 학생이 모두 25명 있었는데 3명이 결석했다.",
     "교실에는 학생이 모두 이십오 명 있었는데 삼 명이 결석했다", 1, "agree"),
]


def _ids(row):
    return f"{row[0]}|{row[1]}"


@pytest.mark.parametrize("row", TABLE, ids=_ids)
def test_table(row):
    ref, hyp, expected, _ = row
    c = best(ref, hyp)
    if expected == E:
        assert c.edits > 0, c
    else:
        assert c.edits == expected, c
    # The chosen reading is one of the text's readings, and the edit count is its distance.
    assert cer_form(c.reading, "ko") in readings(ref).forms


def test_table_size_and_balance():
    assert len(TABLE) >= 150
    correct = sum(row[2] == 0 for row in TABLE)
    assert correct >= 60 and len(TABLE) - correct >= 60


# --- kocer, side by side ------------------------------------------------------------------------


def _kocer_class(ref: str, hyp: str) -> bool:
    kocer = pytest.importorskip("kocer")
    return kocer.measure(ref, hyp).errors == 0


def kocer_comparison() -> Counter:
    """How kocer classifies every row against the grammar: the counts for the record."""
    counts: Counter = Counter()
    for ref, hyp, expected, _ in TABLE:
        ours_ok = best(ref, hyp).edits == 0
        grammar_ok = expected == 0
        kocer_ok = _kocer_class(ref, hyp)
        if ours_ok != grammar_ok:
            counts["ours wrong"] += 1
        elif kocer_ok == grammar_ok:
            counts["agree"] += 1
        elif kocer_ok:
            counts["kocer accepts, we reject"] += 1
        else:
            counts["kocer misses a standard reading"] += 1
    return counts


@pytest.mark.parametrize("row", TABLE, ids=_ids)
def test_kocer_side_by_side(row):
    """kocer agrees with the grammar except where the table says how and why it differs."""
    ref, hyp, expected, mark = row
    kocer_ok = _kocer_class(ref, hyp)
    grammar_ok = expected == 0
    if mark == "agree":
        assert kocer_ok == grammar_ok
    elif mark in ("lenient", "stricter"):
        assert kocer_ok and not grammar_ok
    else:
        assert mark == "misses" and grammar_ok and not kocer_ok


def test_kocer_counts():
    marks = Counter(row[3] for row in TABLE)
    counts = kocer_comparison()
    assert counts["ours wrong"] == 0
    assert counts["agree"] == marks["agree"]
    assert counts["kocer accepts, we reject"] == marks["lenient"] + marks["stricter"]
    assert counts["kocer misses a standard reading"] == marks["misses"]


# --- the API ------------------------------------------------------------------------------------


def test_choice_fields():
    c = best("사과 3개 주세요", "사과 3개 주세요")
    assert isinstance(c, Choice)
    assert (c.reading, c.hypothesis, c.edits, c.ref_len, c.unverified, c.capped, c.source) == (
        "사과 세 개 주세요", "사과 세 개 주세요", 0, 7, True, False, "text")
    c = best("25명", "이십오 명")
    assert (c.reading, c.edits, c.ref_len, c.cer) == ("이십오 명", 0, 4, 0.0)
    c = best("20살", "이십 살")
    assert (c.reading, c.edits, c.ref_len) == ("스무 살", 2, 3)
    assert c.cer == pytest.approx(2 / 3)


@pytest.mark.parametrize("ref, hyp, unverified", [
    ("사과 3개 주세요", "사과 3개 주세요", True),  # the model may have said 삼 개
    ("사과 3개 주세요", "사과 세 개 주세요", False),
    ("사과 3개 주세요", "사과 삼 개 주세요", False),  # checked: an error
    ("사과 세 개 주세요", "사과 3개 주세요", False),  # the suite spelled it out: the model read Hangul
    ("오늘 3시", "오늘 세 시 5", False),  # the transcript's digit is an insertion, not a reading
    ("010-1234-5678", "010 1234 5678", True),
    ("KBS 뉴스", "KBS 뉴스", False),  # Latin is not a number
    ("mp3 파일", "mp3 파일", True),
])
def test_unverified(ref, hyp, unverified):
    assert best(ref, hyp).unverified is unverified


def test_readings_lists_every_standard_form():
    r = readings("-18°C")
    assert isinstance(r, Readings) and not r.capped
    assert r.forms == ("영하십팔도", "마이너스십팔도", "섭씨영하십팔도", "섭씨마이너스십팔도")
    assert set(readings("25명").forms) == {"스물다섯명", "이십오명"}
    assert set(readings("2~3명").forms) == {"두세명", "두명에서세명", "둘에서세명"}
    assert set(readings("10,320원").forms) == {"만삼백이십원", "일만삼백이십원"}
    assert set(readings("30%").forms) == {"삼십퍼센트", "삼십프로"}
    assert set(readings("KBS").forms) == {"kbs", "케이비에스"}
    assert set(readings("20살").forms) == {"스무살"}
    assert set(readings("6월").forms) == {"유월"}


def test_readings_cap_is_recorded():
    text = " ".join(["25명"] * 12)  # 2**12 readings
    r = readings(text, cap=100)
    assert r.capped and len(r.forms) == 100
    assert r.forms[0] == "스물다섯명" * 12
    assert not readings("25명").capped


def test_best_is_exact_where_listing_would_explode():
    """A sentence with many two-way numbers is aligned as a lattice, not by listing readings."""
    text = " ".join(["25명"] * 40)  # 2**40 readings
    spoken = " ".join(["이십오 명" if i % 3 else "스물다섯 명" for i in range(40)])
    c = best(text, spoken)
    assert (c.edits, c.capped) == (0, False)
    c = best(text, spoken.replace("스물다섯", "스물여섯", 1))
    assert c.edits == 1


def test_too_large_lattices_fall_back_to_the_first_readings_with_a_flag(monkeypatch):
    monkeypatch.setattr(korean_readings, "MAX_CELLS", 10)
    c = best("25명이 왔다", "이십오 명이 왔다")
    assert c.capped and c.reading == "스물다섯 명이 왔다" and c.edits == 4


def test_extra_readings_are_accepted():
    text = "3~5일 걸려요"
    spoken = "사나흘 걸려요"
    assert best(text, spoken).edits > 0
    c = best(text, spoken, extra=["삼 일에서 오 일 걸려요", spoken])
    assert (c.edits, c.source, c.reading) == (0, "readings[1]", "사나흘 걸려요")
    assert readings(text, extra=[spoken]).forms[-1] == "사나흘걸려요"
    # The suite text still wins a tie, and a transcript in digits stays unverified.
    c = best(text, "3~5일 걸려요", extra=["삼 일에서 오 일 걸려요"])
    assert c.edits == 0 and c.source == "text" and c.unverified
    c = best("오늘 3시", "오늘 오후 3시", extra=["오늘 오후 세 시"])
    assert c.edits == 0 and c.source == "readings[0]" and c.unverified


def test_first_reading_is_the_normalizer():
    """The lattice's first path is textnorm.normalize: text_norm in the table is one of the readings."""
    texts = [row[0] for row in TABLE] + [row[1] for row in TABLE]
    for path in sorted(SUITES.glob("ko-*/utterances.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts += [r["text"] for r in rows] + [reading for r in rows for reading in r.get("readings", [])]
    for text in texts:
        assert first_reading(text) == normalize(text, "ko"), text
        assert readings(text).forms[0] == cer_form(normalize(text, "ko"), "ko"), text


def test_empty_sides():
    c = best("안녕하세요", "")
    assert (c.edits, c.ref_len, c.hypothesis) == (5, 5, "")
    c = best("...", "안녕")
    assert c.ref_len == 0 and math.isnan(c.cer)


def test_edits_are_a_true_edit_distance():
    """The lattice DP agrees with a plain Levenshtein distance on single-reading texts, and with the
    minimum over listed readings on lattices."""
    from rapidfuzz.distance import Levenshtein

    for ref, hyp, _, _ in TABLE:
        forms = readings(ref).forms
        hyp_forms = readings(hyp).forms
        assert best(ref, hyp).edits == min(Levenshtein.distance(f, h) for f in forms for h in hyp_forms), (ref, hyp)
