"""evalkit listen: the store (concurrent submits, restarts, resume, replays), the statistics
(known answers), the pages at the HTTP level (bad input is 400/404/409, never 500), the command,
and one end-to-end test in real headless Chromium (Playwright) against the real server."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from evalkit import record, runs, tracking
from evalkit import suite as suite_mod
from evalkit.errors import EvalkitError, MissingExtra
from evalkit.listen import anchors, catalog, export, plan, stats
from evalkit.listen.store import Rating, Score, Store, Submission, issue_token, token_ok
from evalkit.record import MetricInfo, RunRecord, SuiteInfo
from evalkit.types import Row

SENTENCES = (("u1", "The cat sat on the mat."), ("u2", "Rain fell all day."), ("u3", "She opened the door."),
             ("u4", "Where are my keys?"))
SHORT, LONG = 0.3, 0.45  # clip lengths of run "a" and run "b": what the browser raters "hear"
# The command in a fresh process, whether or not cli.py registers `listen` yet.
LAUNCH = ("from evalkit import cli\nfrom evalkit.cli_listen import register\n"
          "if not any(c.name == 'listen' for c in cli.app.registered_commands):\n    register(cli.app)\ncli.main()")


# --- builders ------------------------------------------------------------------------------------


def tone(path: Path, freq: float, seconds: float, sr: int = 16000) -> None:
    t = np.arange(int(sr * seconds)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")


def make_suite(root: Path, refs: bool = True) -> Path:
    folder = root / "suite"
    folder.mkdir(parents=True)
    if refs:
        for uid, _ in SENTENCES:
            tone(folder / "refs" / f"{uid}.wav", 300, 0.35)
    (folder / "suite.yaml").write_text("name: mini\nversion: 1\nlanguage: en\ndescription: four sentences\n"
                                       "utterances: u.jsonl\n")
    (folder / "u.jsonl").write_text("".join(json.dumps({"id": u, "text": t}) + "\n" for u, t in SENTENCES))
    return folder


def make_run(root: Path, name: str, suite_dir: Path, seconds: float, failed: tuple[str, ...] = ()) -> Path:
    """A finished run folder as `evalkit run` writes it, with real 16 kHz wavs."""
    folder = root / name
    suite = suite_mod.load(str(suite_dir))
    rows = []
    for uid, text in SENTENCES:
        if uid in failed:
            rows.append(Row(uid, text, (), {"cer": math.nan}, failure="synthesis failed: boom"))
            continue
        tone(folder / "audio" / f"{uid}.wav", 220, seconds)
        rows.append(Row(uid, text, (), {"cer": 0.0}, audio_path=f"audio/{uid}.wav"))
    run_id = hashlib.sha256(name.encode()).hexdigest()[:32]
    summary = RunRecord(
        run_id=run_id, run_name=name, evalkit_version="0.1.0", started_unix=1.7e9, finished_unix=1.7e9 + 5,
        suite=SuiteInfo(suite.name, suite.version, suite.language, suite.digest, str(suite_dir), len(rows)),
        model={"model_sha256": hashlib.sha256(name.encode()).hexdigest()}, adapter="wavdir", asr={},
        metrics={"intelligibility": MetricInfo("1", 16000, {"cer": False}, headline="cer")},
        params={"model": f"model-{name}"}, tags={"evalkit.run_id": run_id, "evalkit.suite": suite.name},
        aggregates={"cer/mean": 0.0})
    record.write(folder, summary, rows)
    return folder


def setup_test(root: Path, test: str = "mos", anchors_: bool = False, n_runs: int = 2, seed: int = 0,
               failed: tuple[str, ...] = ()):
    suite_dir = make_suite(root)
    folders = [make_run(root, name, suite_dir, SHORT + 0.15 * i, failed=failed if i == 1 else ())
               for i, name in enumerate("abc"[:n_runs])]
    loaded = [runs.load_run(str(f)) for f in folders]
    selection = catalog.select(loaded, test, anchors_=anchors_, seed=seed)
    store = Store(root / "ratings" / f"{test}.db")
    store.claim(selection.digest, selection.describe())
    return loaded, selection, store, catalog.build(selection, store.secret, root / "ratings" / "anchors")


def submission(rater: str, item: str, score: float = 3.0, token: str | None = None) -> Submission:
    return Submission(token or f"{rater}-{item}", rater, item, "mos", None, (Score("run", "run", "u1", score),))


# --- store -------------------------------------------------------------------------------------------


def test_two_threads_submitting_at_once_lose_nothing(tmp_path):
    store = Store(tmp_path / "r.db")
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[str]] = {"alice": [], "bob": []}

    def rate(rater: str) -> None:
        barrier.wait()
        for i in range(150):
            outcomes[rater].append(store.submit(submission(rater, f"item{i}")))

    threads = [threading.Thread(target=rate, args=(r,)) for r in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o == "saved" for got in outcomes.values() for o in got)
    ratings = Store(tmp_path / "r.db").ratings()
    assert len(ratings) == 300 and {r.rater for r in ratings} == {"alice", "bob"}
    assert {(r.rater, r.item) for r in ratings} == {(q, f"item{i}") for q in outcomes for i in range(150)}


_WRITER = """
import sys, time
from pathlib import Path
from evalkit.listen.store import Score, Store, Submission
db, rater, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
store = Store(db)
while not go.exists():
    time.sleep(0.005)
for i in range(100):
    sub = Submission(f"{rater}-{i}", rater, f"item{i}", "mos", None,
                     (Score("run", "run", "u1", 4.0), Score("run2", "run", "u1", 2.0)))
    assert store.submit(sub) == "saved"
print("done")
"""


def test_two_server_processes_on_one_file_lose_nothing(tmp_path):
    """Two processes (two servers on one --db, or a server and an export) commit side by side."""
    db, go = tmp_path / "r.db", tmp_path / "go"
    Store(db)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), rater, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rater in ("alice", "bob")]
    time.sleep(1.0)  # both are waiting on the go file: they start writing together
    go.touch()
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0 and "done" in stdout, stderr
    ratings = Store(db).ratings()
    assert len(ratings) == 400  # two rows per form, 100 forms per rater
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 200


def test_a_restart_keeps_ratings_secret_and_tokens(tmp_path):
    store = Store(tmp_path / "r.db")
    token = issue_token(store.secret, "alice", "item1")  # a page rendered before the restart
    assert store.submit(submission("alice", "item0")) == "saved"
    del store
    again = Store(tmp_path / "r.db")
    assert [r.item for r in again.ratings()] == ["item0"]
    assert token_ok(again.secret, "alice", "item1", token)  # ... submits after it
    assert not token_ok(again.secret, "bob", "item1", token) and not token_ok(again.secret, "alice", "item2", token)
    assert not token_ok(again.secret, "alice", "item1", "garbage")


def test_a_replayed_form_and_a_second_form_for_one_item_change_nothing(tmp_path):
    store = Store(tmp_path / "r.db")
    assert store.submit(submission("alice", "x", 5, token="t1")) == "saved"
    assert store.submit(submission("alice", "x", 1, token="t1")) == "replayed"
    assert store.submit(submission("alice", "x", 1, token="t2")) == "already-rated"
    assert store.submit(submission("bob", "x", 2, token="t3")) == "saved"
    assert [(r.rater, r.score) for r in store.ratings()] == [("alice", 5.0), ("bob", 2.0)]


def test_a_database_of_another_test_is_refused(tmp_path):
    _, selection, store, _ = setup_test(tmp_path)
    store.claim(selection.digest, selection.describe())  # the same test: fine, again and again
    with pytest.raises(EvalkitError, match="holds another listening test"):
        store.claim("0" * 64, {})
    not_a_db = tmp_path / "x.db"
    not_a_db.write_bytes(b"not sqlite at all, just some bytes" * 10)
    with pytest.raises(EvalkitError, match="not a usable listening-test database"):
        Store(not_a_db)
    with pytest.raises(EvalkitError, match="no listening-test database"):
        Store(tmp_path / "missing.db", create=False)


def test_a_rater_resumes_at_the_next_unrated_item_after_a_restart(tmp_path):
    _, selection, store, cat = setup_test(tmp_path)
    order = plan.plan(cat, "alice")
    for shown in order[:3]:
        token = issue_token(store.secret, "alice", shown.item.id)
        store.submit(Submission(token, "alice", shown.item.id, "mos", shown.item.repeat_of, ()))
    restarted = Store(store.path)
    rebuilt = catalog.build(selection, restarted.secret, tmp_path / "ratings" / "anchors")
    shown, total = plan.next_unrated(rebuilt, "alice", restarted.rated("alice"))
    assert shown is not None and shown.position == 3 and shown.item.id == order[3].item.id
    assert total == len(order) == len(cat.items) + plan.ATTENTION_REPEATS
    first_of_bob, _ = plan.next_unrated(rebuilt, "bob", restarted.rated("bob"))
    assert first_of_bob is not None and first_of_bob.position == 0


# --- plan and catalog --------------------------------------------------------------------------------


def test_order_is_a_function_of_seed_and_rater(tmp_path):
    loaded, selection, store, cat = setup_test(tmp_path)
    ids = [p.item.id for p in plan.plan(cat, "alice")]
    assert ids == [p.item.id for p in plan.plan(cat, "alice")]
    assert ids != [p.item.id for p in plan.plan(cat, "bob")]
    other_seed = catalog.select(loaded, "mos", seed=1)
    assert other_seed.digest != selection.digest  # a new seed is a new test (a new database)
    reseeded = catalog.build(other_seed, store.secret, tmp_path / "anchors")
    assert [p.item.id for p in plan.plan(reseeded, "alice")] != ids
    # Every item once, plus the attention repeats, each at least two items after its original.
    assert sorted(i for i in ids if cat.item(i).repeat_of is None) == sorted(i.id for i in cat.items)
    for k, item_id in enumerate(ids):
        original = cat.item(item_id).repeat_of
        if original is not None:
            assert ids.index(original) <= k - 2 and ids.index(original) < len(cat.items) // 2


def test_ab_repeats_play_on_swapped_sides(tmp_path):
    _, _, _, cat = setup_test(tmp_path, test="ab")
    for rater in ("alice", "bob", "carol", "dave"):
        shown = {p.item.id: p for p in plan.plan(cat, rater)}
        repeats = [p for p in shown.values() if p.item.repeat_of]
        assert repeats
        for p in repeats:
            first = shown[p.item.repeat_of]
            assert [cat.clips[c].system for c in p.clips] == [cat.clips[c].system for c in reversed(first.clips)]
    sides = {cat.clips[plan.plan(cat, r)[0].clips[0]].system for r in map(str, range(20))}
    assert len(sides) == 2  # which run plays as "A" is a coin flip per rater and item


def test_ids_are_opaque_and_anchors_are_made_once(tmp_path):
    loaded, selection, store, cat = setup_test(tmp_path, anchors_=True, failed=("u4",))
    keys = [s.key for s in selection.systems]
    assert keys[2:] == [catalog.REFERENCE, catalog.DEGRADED]
    # u4 failed in run b: in MOS it is still rated for run a and the anchors, never for b.
    assert {(cat.clips[i.clips[0]].system, i.utterance_id) for i in cat.items} == \
        {(k, u) for k in keys for u, _ in SENTENCES} - {(keys[1], "u4")}
    names = [r.summary.run_id for r in loaded] + [r.summary.model_name for r in loaded] + ["reference", "degraded"]
    for some_id in [*cat.clips, *(i.id for i in cat.items), *(t.id for t in cat.twins.values())]:
        assert re.fullmatch(r"[0-9a-f]{20}", some_id) and not any(n in some_id for n in names)
    degraded = sorted({c.path for c in cat.clips.values() if c.system == catalog.DEGRADED})
    assert len(degraded) == 1  # the four references are identical tones: one anchor file
    assert degraded[0].parent == tmp_path / "ratings" / "anchors"
    stamp = degraded[0].stat().st_mtime_ns
    catalog.build(selection, store.secret, tmp_path / "ratings" / "anchors")
    assert degraded[0].stat().st_mtime_ns == stamp  # found again, not rewritten


def test_the_degraded_anchor_is_low_passed_and_noisy(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    source = tmp_path / "src.wav"
    soundfile.write(source, 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t), sr)
    out = anchors.degraded_copy(source, tmp_path / "anchors")
    y, rate = soundfile.read(out)
    spectrum = np.abs(np.fft.rfft(y))
    at = lambda hz: spectrum[int(hz * len(y) / rate)]  # noqa: E731
    assert rate == sr and len(y) == sr
    assert at(6000) < 0.01 * at(1000)  # the 6 kHz tone is gone
    low = np.fft.irfft(np.where(np.fft.rfftfreq(len(y), 1 / sr) < 3000, np.fft.rfft(y), 0), len(y))
    snr = 10 * np.log10(np.mean(low ** 2) / np.mean((y - low) ** 2))
    assert 12 < snr < 20  # noise at about 15 dB below the low-passed signal (most of it above 3 kHz is noise)
    assert anchors.degraded_copy(source, tmp_path / "anchors") == out


def test_runs_that_cannot_make_the_test_are_one_line(tmp_path):
    loaded, *_ = setup_test(tmp_path, n_runs=3)
    with pytest.raises(EvalkitError, match="exactly two runs"):
        catalog.select(loaded, "ab")
    with pytest.raises(EvalkitError, match="two runs or more"):
        catalog.select(loaded[:1], "mushra")
    with pytest.raises(EvalkitError, match="--anchors is for"):
        catalog.select(loaded[:2], "ab", anchors_=True)
    with pytest.raises(EvalkitError, match="same run"):
        catalog.select([loaded[0], loaded[0]], "mos")
    with pytest.raises(EvalkitError, match="--test must be one of"):
        catalog.select(loaded, "mosh")


# --- statistics: known answers -------------------------------------------------------------------------


@pytest.mark.parametrize("wins, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (the Wilson score interval).
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
    (8, 10, 0.4902, 0.9433)])
def test_wilson_interval_known_values(wins, n, low, high):
    got = stats.wilson(wins, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_without_judgments_is_nan():
    assert all(math.isnan(x) for x in stats.wilson(0, 0))


def test_mos_ci_of_a_constant_table_has_no_width():
    cells = [(r, u, 4.0) for r in "abc" for u in ("u1", "u2", "u3")]
    assert stats.bootstrap_ci(cells) == (4.0, 4.0, 4.0)


def test_mos_ci_resamples_raters():
    """Two raters, one always 2 and one always 4, on every utterance: a resample draws them
    {2, 2}, {2, 4} or {4, 4} (p = 1/4, 1/2, 1/4), so the 95% interval is exactly [2, 4]. A bootstrap
    of the ratings alone would call 3 +- 0.3 certain."""
    cells = [(r, f"u{i}", s) for r, s in (("alice", 2.0), ("bob", 4.0)) for i in range(30)]
    assert stats.bootstrap_ci(cells) == (3.0, 2.0, 4.0)


def test_mos_ci_spread_matches_the_crossed_design():
    """An additive table x[r, u] = a_r + b_u, every rater on every utterance: a resample's mean is
    mean(a over drawn raters) + mean(b over drawn utterances), whose variance is
    var(a)/R + var(b)/U (population variances). The bootstrap's interval has that width."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 0.6, 8), rng.normal(0, 0.4, 40)
    cells = [(f"r{i}", f"u{j}", 3 + a[i] + b[j]) for i in range(8) for j in range(40)]
    mean, low, high = stats.bootstrap_ci(cells, resamples=20_000)
    sd = math.sqrt(a.var() / 8 + b.var() / 40)
    assert mean == pytest.approx(3 + a.mean() + b.mean())
    assert (high - low) / (2 * 1.96) == pytest.approx(sd, rel=0.06)
    # Resampling utterances alone (one rater's view) misses the raters' share of the spread.
    one_rater = stats.bootstrap_ci([(f"r{i}", f"u{j}", 3 + a[i] + b[j]) for i in range(1) for j in range(40)])
    assert one_rater[2] - one_rater[1] < high - low


def rating(rater: str, item: str, run: str, score: float, repeat_of: str | None = None, test: str = "mos",
           token: str | None = None, utterance: str = "u1") -> Rating:
    return Rating(token or f"{rater}-{item}", rater, item, test, repeat_of, run, "run", utterance, score, 0.0)


def test_screening_compares_repeats_with_first_ratings():
    ratings = [
        rating("alice", "i1", "A", 4), rating("alice", "i1again", "A", 5, repeat_of="i1"),  # within 1: agrees
        rating("bob", "i1", "A", 5), rating("bob", "i1again", "A", 2, repeat_of="i1"),  # 3 apart: fails
        rating("carol", "i1", "A", 3),  # no repeat reached yet
    ]
    checks = stats.screen(ratings)
    assert {r: c.status for r, c in checks.items()} == {"alice": "pass", "bob": "fail", "carol": "pending"}
    assert checks["bob"].detail == "0 of 1 attention repeats agree"
    kept = stats.usable(ratings, checks)
    assert [(r.rater, r.score) for r in kept] == [("alice", 4), ("carol", 3)]  # no repeats, no bob
    assert len(stats.usable(ratings, checks, keep_failed=True)) == 3


def test_ab_screening_and_preferences():
    def judgment(rater, item, share_a, repeat_of=None, utterance="u1"):
        return [rating(rater, item, "A", share_a, repeat_of, "ab", f"{rater}{item}", utterance),
                rating(rater, item, "B", 1 - share_a, repeat_of, "ab", f"{rater}{item}", utterance)]

    ratings = (judgment("alice", "i1", 1) + judgment("alice", "i2", 1, utterance="u2")
               + judgment("alice", "i1r", 0.5, "i1")  # a clear choice, then no preference: agrees
               + judgment("bob", "i1", 1) + judgment("bob", "i2", 0.5, utterance="u2")
               + judgment("bob", "i1r", 0, "i1"))  # reversed on the swapped repeat: fails
    checks = stats.screen(ratings)
    assert checks["alice"].status == "pass" and checks["bob"].status == "fail"
    prefs = stats.preferences(stats.usable(ratings, checks, keep_failed=True))
    a, b = prefs["A"], prefs["B"]
    assert (a.wins, a.losses, a.ties, a.raters, a.rate) == (3, 0, 1, 2, 1.0)
    assert (b.wins, b.losses, b.ties, b.rate) == (0, 3, 1, 0.0)
    assert (a.low, a.high) == pytest.approx(stats.wilson(3, 3)) and a.opponent == "B"


# --- the pages (HTTP), bad input -------------------------------------------------------------------------


@pytest.fixture
def client_for(tmp_path):
    from starlette.testclient import TestClient

    made = {}

    def make(test: str = "mos", anchors_: bool = False):
        loaded, selection, store, cat = setup_test(tmp_path / test, test=test, anchors_=anchors_)
        from evalkit.listen.app import create_app

        client = TestClient(create_app(cat, store), raise_server_exceptions=False)
        made.update(loaded=loaded, selection=selection, store=store, catalog=cat)
        return client, made

    return make


def form_of(page: str) -> dict[str, str]:
    return {"item": re.search(r'name="item" value="([^"]+)"', page).group(1),
            "token": re.search(r'name="token" value="([^"]+)"', page).group(1)}


def message(page: str) -> str:
    return html.unescape(re.search(r'id="message">([^<]*)<', page).group(1))


def test_a_rater_starts_rates_reloads_and_continues(client_for):
    client, made = client_for("mos")
    start = client.post("/start", data={"rater": "  Kim Min "}, follow_redirects=False)
    assert start.status_code == 303 and start.headers["location"] == "/r/kim-min"
    page = client.get("/r/kim-min")
    assert page.status_code == 200 and "Item 1 of 10" in page.text
    first = form_of(page.text)
    assert client.get("/r/kim-min").text.count(first["item"]) == 1  # a reload shows the same item
    done = client.post("/r/kim-min", data={**first, "score": "4"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/r/kim-min"
    assert "Item 2 of 10" in client.get("/r/kim-min").text
    assert client.get("/r/KIM%20MIN").text.count("Item 2 of 10") == 1  # the same rater, typed differently
    rows = made["store"].ratings()
    assert [(r.rater, r.item, r.score) for r in rows] == [("kim-min", first["item"], 4.0)]


def test_pages_and_urls_never_name_a_run(client_for):
    client, made = client_for("mushra", anchors_=True)
    page = client.get("/r/alice").text
    secrets_ = [r.summary.run_id for r in made["loaded"]] + [r.summary.model_name for r in made["loaded"]]
    secrets_ += [str(r.audio_dir) for r in made["loaded"]] + ["reference", "degraded", "anchor"]
    assert not [s for s in secrets_ if s.lower() in page.lower()]
    clips = re.findall(r'src="(/clip/[^"]+)"', page)
    assert len(clips) == 4 and all(re.fullmatch(r"/clip/[0-9a-f]{20}\.wav", c) for c in clips)
    audio = client.get(clips[0])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav" and audio.content[:4] == b"RIFF"


BAD = [  # (what is sent, status, words of the answer)
    ({"score": "7"}, 400, "from 1 to 5 (got '7')"),
    ({"score": "0"}, 400, "from 1 to 5"),
    ({"score": "3.5"}, 400, "whole number from 1 to 5"),
    ({"score": "-1"}, 400, "from 1 to 5"),
    ({}, 400, "choose a score"),
    ({"score": "4", "token": "0123456789abcdef.forged"}, 400, "token does not belong"),
    ({"score": "4", "item": "ffffffffffffffffffff"}, 404, "no item"),
    ({"score": "4", "item": ""}, 404, "no item"),
]


@pytest.mark.parametrize("change, status, says", BAD, ids=[f"{b[1]}-{json.dumps(b[0])}" for b in BAD])
def test_bad_ratings_get_a_clear_answer_never_a_500(client_for, change, status, says):
    client, made = client_for("mos")
    answer = client.post("/r/alice", data={**form_of(client.get("/r/alice").text), **change})
    assert answer.status_code == status, answer.text
    assert says in message(answer.text) and "Traceback" not in answer.text
    assert made["store"].ratings() == []


def test_replays_and_double_ratings_are_409(client_for):
    client, made = client_for("mos")
    form = form_of(client.get("/r/alice").text)
    assert client.post("/r/alice", data={**form, "score": "2"}, follow_redirects=False).status_code == 303
    replay = client.post("/r/alice", data={**form, "score": "5"})
    assert replay.status_code == 409 and "already submitted" in message(replay.text)
    assert 'href="/r/alice"' in replay.text  # the way on
    again = {"item": form["item"], "token": issue_token(made["store"].secret, "alice", form["item"])}
    twice = client.post("/r/alice", data={**again, "score": "5"})  # the same item from an older page
    assert twice.status_code == 409 and "already rated this item" in message(twice.text)
    assert [r.score for r in made["store"].ratings()] == [2.0]


def test_another_raters_repeat_is_404(client_for):
    client, made = client_for("mos")
    cat = made["catalog"]
    mine = {p.item.id for p in plan.plan(cat, "alice")}
    foreign = next(t.id for t in cat.twins.values() if t.id not in mine)
    token = issue_token(made["store"].secret, "alice", foreign)
    answer = client.post("/r/alice", data={"item": foreign, "token": token, "score": "3"})
    assert answer.status_code == 404 and "not in the test of rater 'alice'" in message(answer.text)


@pytest.mark.parametrize("request_, status, says", [
    (("GET", "/clip/0123456789abcdef0123.wav", None, None), 404, "no such clip"),
    (("GET", "/clip/../../etc/passwd", None, None), 404, "no such page"),
    (("GET", "/nowhere", None, None), 404, "no such page"),
    (("GET", "/start", None, None), 405, "does not take that method"),
    (("GET", "/r/a%21b", None, None), 400, "rater id"),
    (("GET", "/r/" + "x" * 65, None, None), 400, "rater id"),
    (("POST", "/start", {"rater": "!!"}, None), 400, "enter a name or code"),
    (("POST", "/start", {"rater": ".."}, None), 400, "enter a name or code"),
    (("POST", "/start", {"rater": ""}, None), 400, "enter a name or code"),
    (("POST", "/r/alice", None, b'{"score": 4}'), 400, "x-www-form-urlencoded"),
    (("POST", "/r/alice", None, b"score=" + b"4" * 20000), 413, "larger than"),
    (("POST", "/r/alice", None, b"score=4&score=5"), 400, "gives 'score' twice"),
    (("POST", "/r/alice", None, b"item=%ff%fe"), 400, "not valid UTF-8"),
], ids=lambda v: v if isinstance(v, int) else None)
def test_bad_requests_get_a_clear_page(client_for, request_, status, says):
    client, _ = client_for("mos")
    method, url, data, body = request_
    if body is not None:
        kind = "application/json" if body.startswith(b"{") else "application/x-www-form-urlencoded"
        answer = client.request(method, url, content=body, headers={"content-type": kind})
    else:
        answer = client.request(method, url, data=data)
    assert answer.status_code == status, answer.text
    assert says in message(answer.text) and "Traceback" not in answer.text


@pytest.mark.parametrize("test, values, says", [
    ("ab", {"choice": "C"}, "A, B or none"),
    ("ab", {}, "got nothing"),
    ("mushra", {"s0": "101", "s1": "60"}, "slider 1 must be a whole number from 0 to 100 (got '101')"),
    ("mushra", {"s0": "60", "s1": "-5"}, "slider 2"),
    ("mushra", {"s0": "60", "s1": "7.5"}, "slider 2"),
    ("mushra", {"s0": "60"}, "slider 2 must be a whole number from 0 to 100 (got '')"),
])
def test_ab_and_mushra_values_outside_the_scale_are_400(client_for, test, values, says):
    client, made = client_for(test)
    answer = client.post("/r/alice", data={**form_of(client.get("/r/alice").text), **values})
    assert answer.status_code == 400 and says in message(answer.text)
    assert made["store"].ratings() == []


def test_a_whole_ab_test_gives_preferences_csv_and_mlflow(client_for, tmp_path):
    """Two raters prefer run a on every sentence except that bob has no preference on one;
    the attention repeats (swapped sides) agree. Through the pages, the store, the CSV and a real
    MLflow sqlite store."""
    from mlflow.tracking import MlflowClient

    client, made = client_for("ab")
    cat, store = made["catalog"], made["store"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for r in made["loaded"]:
        tracking.log_run(Path(r.source.removeprefix("folder:")), uri, "listen-ab")
    loaded = [runs.load_run(r.source.removeprefix("folder:")) for r in made["loaded"]]
    selection = catalog.select(loaded, "ab")
    run_a = loaded[0].summary.run_id
    for rater in ("alice", "bob"):
        while True:
            page = client.get(f"/r/{rater}").text
            if "Thank you" in page:
                break
            form = form_of(page)
            shown = plan.presentation(cat, rater, form["item"])
            a_side = "A" if cat.clips[shown.clips[0]].system == run_a else "B"
            tie = rater == "bob" and shown.item.utterance_id == "u2" and shown.item.repeat_of is None
            assert client.post(f"/r/{rater}", data={**form, "choice": "none" if tie else a_side},
                               follow_redirects=False).status_code == 303
    results = export.read(store, "ab")
    assert {c.status for c in results.checks.values()} == {"pass"}
    rows = export.csv_rows(results, selection)
    assert len(rows) == 2 * 4 * 2  # 2 raters x 4 sentences x 2 rows (one per run) per judgment
    assert sum(float(r["score"]) for r in rows if r["run"] == run_a) == 7.5  # 7 wins and one tie
    lines = export.log_to_mlflow(results, selection, uri)
    assert all("logged ab/win_rate" in line for line in lines), lines
    metrics = MlflowClient(uri).get_run(loaded[0].mlflow_run_id).data.metrics
    assert metrics["ab/win_rate"] == 1.0 and (metrics["ab/wins"], metrics["ab/ties"]) == (7, 1)
    assert (metrics["ab/ci_low"], metrics["ab/ci_high"]) == pytest.approx(stats.wilson(7, 7))
    other = MlflowClient(uri).get_run(loaded[1].mlflow_run_id).data.metrics
    assert other["ab/win_rate"] == 0.0 and other["ab/losses"] == 7


def test_mushra_rates_every_system_with_hidden_anchors(client_for):
    client, made = client_for("mushra", anchors_=True)
    cat = made["catalog"]
    score_of = {catalog.REFERENCE: 95, catalog.DEGRADED: 10}
    while "Thank you" not in (page := client.get("/r/alice").text):
        form = form_of(page)
        shown = plan.presentation(cat, "alice", form["item"])
        values = {f"s{i}": str(score_of.get(cat.clips[c].system, 60)) for i, c in enumerate(shown.clips)}
        assert client.post("/r/alice", data={**form, **values}, follow_redirects=False).status_code == 303
    results = export.read(made["store"], "mushra")
    summaries = stats.score_summaries(results.usable)
    assert summaries[catalog.REFERENCE].mean == 95 and summaries[catalog.DEGRADED].mean == 10
    metrics = export.run_metrics(results, made["loaded"][0].summary.run_id)
    assert metrics["mushra/mean"] == 60 and metrics["mushra/reference/mean"] == 95
    assert metrics["mushra/ratings"] == 4 and metrics["mushra/raters_failed"] == 0


def test_a_missing_listen_extra_names_it(monkeypatch, tmp_path):
    from evalkit.listen import app

    _, _, store, cat = setup_test(tmp_path)
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(MissingExtra, match=r"evalkit-tts\[listen\]"):
        app.create_app(cat, store)


def test_the_wheel_declares_the_listen_package_and_its_templates():
    """setuptools lists packages explicitly here: evalkit.listen and its templates must be named,
    or an installed evalkit has no listening pages (tests/test_packaging.py builds the wheel)."""
    import fnmatch
    import tomllib

    from evalkit.listen.app import TEMPLATE_DIR, TEMPLATES

    setup = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "evalkit.listen" in setup["packages"]
    globs = setup["package-data"].get("evalkit.listen", [])
    files = [p.relative_to(TEMPLATE_DIR.parent).as_posix() for p in TEMPLATE_DIR.iterdir()]
    assert sorted(files) == sorted(f"templates/{t}" for t in TEMPLATES)
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)


# --- the command ------------------------------------------------------------------------------------


def evalkit_listen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCH, "listen", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_the_command_refuses_bad_input_in_one_line(tmp_path):
    suite_dir = make_suite(tmp_path)
    a, b = make_run(tmp_path, "a", suite_dir, SHORT), make_run(tmp_path, "b", suite_dir, LONG)
    for args, says in [((str(a), "nonsense-run"), "'nonsense-run' is neither a run folder"),
                       ((str(a), str(b), str(a), "--test", "ab"), "exactly two runs"),
                       ((str(a), "--test", "abx"), "--test must be one of"),
                       ((str(a), "--export", "x.csv", "--db", "missing.db"), "no listening-test database")]:
        proc = evalkit_listen(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and says in proc.stderr and "Traceback" not in proc.stderr


def test_the_command_help_shows_placeholders(tmp_path):
    proc = subprocess.run([sys.executable, "-c", LAUNCH, "listen", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    options = proc.stdout.split("Options", 1)[1]
    assert not re.search(r"<(bool|str|int|list\[\w+\]|path)>", options) and "--raters-seed" in options


# --- end to end: the real server, real headless Chromium, MLflow ---------------------------------------


def start_server(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    with open(cwd / "server.log", "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "listen", *args, "--port", "0"], cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("open "):
            return proc, line.split()[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"the listening server did not start: {(cwd / 'server.log').read_text()[-2000:]}")


def rate_in_browser(url: str, rater: str, scores: dict[bool, str], *, stop_after: int | None = None,
                    reload_after: int | None = None, screenshot: Path | None = None) -> dict:
    """One rater in their own headless Chromium: start page, then each item: play every clip to the
    end, "hear" it (the clip's duration tells the runs apart: short is run a), rate, submit."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"headings": [], "errors": [], "pages": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.goto(url)
            page.fill("#rater", rater)
            page.click("input[type=submit]")
            rated = 0
            while page.locator("h1").inner_text().startswith("Item"):
                seen["headings"].append(page.locator("h1").inner_text())
                seen["pages"].append(page.content())
                assert page.is_disabled("#submit")  # not before listening
                page.click("button.play")
                page.wait_for_function("!document.getElementById('submit').disabled", timeout=20_000)
                duration = page.evaluate("document.querySelector('audio').duration")
                page.check(f"input[name=score][value='{scores[duration < (SHORT + LONG) / 2]}']")
                if screenshot is not None and rated == 0:
                    page.screenshot(path=str(screenshot), full_page=True)
                with page.expect_navigation():
                    page.click("#submit")
                rated += 1
                if rated == reload_after:
                    before = page.locator("h1").inner_text()
                    page.reload()
                    assert page.locator("h1").inner_text() == before  # the reload neither skips nor resubmits
                if rated == stop_after:
                    break
            seen["final"] = page.locator("h1").inner_text()
        finally:
            browser.close()
    return seen


@pytest.mark.slow
def test_listening_test_in_headless_chromium_end_to_end(tmp_path):
    """alice rates 3 clips (reloading after the 2nd), stops, comes back in a new browser and
    finishes, while bob rates everything at the same time in his own browser. alice gives the short
    clips (run a) 4 and the long ones (run b) 2, bob 5 and 1. Then the ratings are in sqlite, in the
    CSV and on each run's MLflow run, where MOS is exactly 4.5 and 1.5, with the rater bootstrap's
    CIs [4, 5] and [1, 2] (every rater is constant, so resampling raters decides)."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the system Chromium is used)")
    from mlflow.tracking import MlflowClient

    suite_dir = make_suite(tmp_path)
    a, b = make_run(tmp_path, "a", suite_dir, SHORT), make_run(tmp_path, "b", suite_dir, LONG)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_ids = [tracking.log_run(folder, uri, "listen-e2e") for folder in (a, b)]
    db = tmp_path / "listen" / "mos.db"
    proc, url = start_server([str(a), str(b), "--db", str(db)], tmp_path)
    try:
        bob: dict = {}
        worker = threading.Thread(target=lambda: bob.update(rate_in_browser(url, "bob", {True: "5", False: "1"})))
        worker.start()
        first = rate_in_browser(url, "Alice", {True: "4", False: "2"}, stop_after=3, reload_after=2,
                                screenshot=Path("/tmp/listen-screenshot.png"))
        second = rate_in_browser(url, "alice", {True: "4", False: "2"})
        worker.join(timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0  # a graceful stop
    total = 10  # 2 runs x 4 sentences + 2 attention repeats
    assert first["headings"] == [f"Item {k} of {total}" for k in (1, 2, 3)]
    assert second["headings"] == [f"Item {k} of {total}" for k in range(4, total + 1)]  # resumed
    assert bob["headings"] == [f"Item {k} of {total}" for k in range(1, total + 1)]
    assert second["final"] == bob["final"] == "Thank you"
    assert not first["errors"] + second["errors"] + bob["errors"]
    secrets_ = [mlflow_ids[0], mlflow_ids[1], "model-a", "model-b", str(a), str(b)]
    secrets_ += [json.loads((f / "summary.json").read_text())["run_id"] for f in (a, b)]
    assert not [s for p in first["pages"] + bob["pages"] for s in secrets_ if s in p]  # blind
    assert Path("/tmp/listen-screenshot.png").stat().st_size > 5000

    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        per_rater = dict(con.execute("SELECT rater, COUNT(*) FROM ratings GROUP BY rater").fetchall())
    assert per_rater == {"alice": total, "bob": total}

    out_csv = tmp_path / "ratings.csv"
    proc = subprocess.run([sys.executable, "-c", LAUNCH, "listen", str(a), str(b), "--db", str(db), "--export",
                           str(out_csv), "--log"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rater alice: attention check pass" in proc.stdout and "rater bob: attention check pass" in proc.stdout
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["run", "utterance_id", "score", "rater", "test", "timestamp"]
    assert len(rows) == 2 * 8  # first ratings only
    run_a, run_b = (json.loads((f / "summary.json").read_text())["run_id"] for f in (a, b))
    scores_a = sorted((r["rater"], r["score"]) for r in rows if r["run"] == run_a)
    assert scores_a == [("alice", "4")] * 4 + [("bob", "5")] * 4
    assert {r["score"] for r in rows if r["run"] == run_b} == {"2", "1"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["timestamp"]) for r in rows)

    mlflow = MlflowClient(uri)
    for run_id, mean, ci in ((mlflow_ids[0], 4.5, (4.0, 5.0)), (mlflow_ids[1], 1.5, (1.0, 2.0))):
        metrics = mlflow.get_run(run_id).data.metrics
        assert metrics["mos/mean"] == mean and (metrics["mos/ci_low"], metrics["mos/ci_high"]) == ci
        assert (metrics["mos/ratings"], metrics["mos/raters"], metrics["mos/utterances"]) == (8, 2, 4)
        assert {f.path for f in mlflow.list_artifacts(run_id, "listen")} == \
            {"listen/mos_ratings.csv", "listen/mos_utterances.json"}
        table = json.loads(Path(mlflow.download_artifacts(run_id, "listen/mos_utterances.json", str(tmp_path)))
                           .read_text())
        assert len(table["data"]) == 4 and {row[table["columns"].index("mean")] for row in table["data"]} == {mean}
