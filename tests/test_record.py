"""The run record's one JSON form: rows and summaries read back exactly as they were written,
including folders written by earlier versions, and anything else refused with one line."""

from __future__ import annotations

import json
import math

import pytest

from evalkit import record
from evalkit.errors import EvalkitError
from evalkit.types import Row


def _row(**kw) -> Row:
    base = dict(utterance_id="ko-001", text="사과 3개", tags=("numbers", "native"),
                values={"cer": 0.25, "wer": math.nan, "ref_chars": 4.0},
                texts={"transcript": "사과 세 개", "cer_alignment": "사과 [3→세] 개"},
                audio_path="audio/ko-001.wav", failure=None, notes=("asr failed: x; y", "pesq: no reference audio"))
    base.update(kw)
    return Row(**base)


def _same(a: Row, b: Row) -> bool:
    # NaN != NaN: compare the JSON forms, where a missing value is null.
    return a.to_json() == b.to_json() and set(a.values) == set(b.values)


def test_row_round_trips_through_json_text():
    row = _row()
    back = Row.from_json(json.loads(json.dumps(row.to_json(), ensure_ascii=False)))
    assert _same(row, back)
    assert math.isnan(back.values["wer"]) and back.values["cer"] == 0.25
    # A note that itself holds "; " survives: notes are a list in JSON, joined only for the CSV.
    assert back.notes == ("asr failed: x; y", "pesq: no reference audio")
    assert row.csv()["notes"] == "asr failed: x; y; pesq: no reference audio"
    assert row.csv()["tags"] == "numbers,native"


def test_a_failed_row_round_trips():
    row = _row(values={"duration_s": 0.0}, texts={}, audio_path=None, failure="synthesis failed: boom", notes=())
    assert _same(row, Row.from_json(row.to_json()))


def test_rows_written_before_notes_were_a_list_still_read():
    old = {"id": "en-1", "text": "Hi.", "tags": [], "transcript": "hi", "cer": 0.0, "audio": "audio/en-1.wav",
           "failure": None, "notes": "a; b"}
    row = Row.from_json(old)
    assert row.notes == ("a", "b") and row.texts == {"transcript": "hi"} and row.values == {"cer": 0.0}


@pytest.mark.parametrize("bad", [[], "x", {"text": "no id"}, {"id": 3}])
def test_a_row_that_is_not_a_row_is_refused(bad):
    with pytest.raises(ValueError):
        Row.from_json(bad)


def _summary() -> record.RunRecord:
    return record.RunRecord(
        run_id="a" * 32, run_name="ko-base:ckpt.pt", evalkit_version="0.1.0", started_unix=100.0,
        finished_unix=112.5, suite=record.SuiteInfo("ko-base", "1", "ko", "d" * 64, "/suites/ko-base", 3),
        model={"model": "ckpt.pt", "model_sha256": "f" * 64}, adapter="torch", asr={"engine": "faster-whisper"},
        metrics={"intelligibility": record.MetricInfo(
            "2", 16000, {"cer": False, "wer": False, "ref_chars": None, "char_edits": None},
            options={"x": 1}, counts=("ref_chars", "char_edits"), corpus={"cer": (("char_edits",), "ref_chars")},
            alignments=("cer_alignment",), headline="cer")},
        params={"model": "ckpt.pt", "limit": 3}, tags={"evalkit.run_id": "a" * 32},
        aggregates={"cer/mean": 0.1, "cer/corpus": math.nan},
        by_tag={"liaison": {"cer/mean": 0.2, "utterances/count": 2.0}}, step=1200,
        tracking=record.TrackingInfo("sqlite:///x.db", "evalkit-ko-base", "b" * 32),
        reference=record.ReferenceInfo("folder", "/refs", "e" * 64), cache={"scores_cached": 2},
        resumed_utterances=1, broken_stages=("asr: boom",))


def test_summary_round_trips_and_keeps_its_on_disk_keys(tmp_path):
    rec = _summary()
    record.write(tmp_path, rec, [_row()])
    on_disk = json.loads((tmp_path / record.SUMMARY).read_text(encoding="utf-8"))
    # Readers outside evalkit (jq in CI, MLflow artifact viewers) keep their keys.
    assert on_disk["wall_seconds"] == 12.5 and on_disk["suite"]["name"] == "ko-base"
    assert on_disk["tracking"]["run_id"] == "b" * 32 and on_disk["aggregates"]["cer/corpus"] is None
    back, rows = record.load(tmp_path)
    assert back.to_json() == rec.to_json()
    assert back.metrics["intelligibility"].corpus == {"cer": (("char_edits",), "ref_chars")}
    assert back.by_tag["liaison"]["cer/mean"] == 0.2 and back.step == 1200
    assert _same(rows[0], _row())


def test_counts_are_not_compared_utterance_by_utterance():
    keys = _summary().value_keys()
    assert set(keys) == {"cer", "wer"} and keys["cer"] == ("intelligibility", False)


def test_summary_written_by_an_earlier_version_reads_with_defaults():
    old = {"run_id": "c" * 32, "suite": {"name": "en-base", "digest": "d"}, "params": {"reference": "suite:en-base"},
           "tags": {"evalkit.reference_digest": "9" * 64},
           "metrics": {"pesq": {"version": "1", "sample_rate": 16000, "higher_is_better": {"pesq_wb": True}}},
           "aggregates": {"pesq_wb/mean": 3.1}}
    rec = record.RunRecord.from_json(old)
    assert rec.reference == record.ReferenceInfo("suite", "en-base", "9" * 64)
    assert rec.metrics["pesq"].alignments == () and rec.metrics["pesq"].headline is None
    assert rec.tracking.run_id is None


@pytest.mark.parametrize("content", ["[]", "{}", '{"run_id": "x"}', "not json", '{"run_id": "x", "suite": 3}'])
def test_a_folder_that_is_not_a_run_gives_one_line(tmp_path, content):
    (tmp_path / record.SUMMARY).write_text(content, encoding="utf-8")
    (tmp_path / record.TABLE_JSONL).write_text("", encoding="utf-8")
    with pytest.raises(EvalkitError) as err:
        record.load(tmp_path)
    assert "not a finished evalkit run folder" in str(err.value) and "\n" not in str(err.value)


def test_progress_of_a_run_interrupted_under_the_earlier_format_resumes(tmp_path):
    old = {"utterance_id": "en-1", "text": "Hi.", "tags": ["q"], "values": {"cer": 0.5, "wer": None},
           "texts": {"transcript": "hi"}, "audio_path": "audio/en-1.wav", "failure": None, "notes": ["n"]}
    new = _row(utterance_id="en-2")
    (tmp_path / record.PROGRESS).write_text(json.dumps(old) + "\n" + json.dumps(new.to_json()) + "\n{\"id\": ",
                                            encoding="utf-8")
    rows = record.read_progress(tmp_path)
    assert [r.utterance_id for r in rows] == ["en-1", "en-2"]  # the line cut short by a kill is dropped
    assert rows[0].values["cer"] == 0.5 and math.isnan(rows[0].values["wer"]) and rows[0].notes == ("n",)
    assert _same(rows[1], new)


def test_counts_of_a_record_that_did_not_list_them_come_from_its_sums():
    old = {"run_id": "c" * 32, "suite": {"name": "en-base"},
           "metrics": {"intelligibility": {"version": "2", "higher_is_better": {"cer": False, "char_sub": None}}},
           "aggregates": {"cer/mean": 0.1, "char_sub/sum": 3.0}}
    rec = record.RunRecord.from_json(old)
    assert rec.metrics["intelligibility"].counts == ("char_sub",) and set(rec.value_keys()) == {"cer"}


def test_a_file_digest_is_remembered_only_while_the_file_is_unchanged(tmp_path):
    import hashlib
    import os

    from evalkit.cache import sha256_file

    f = tmp_path / "ckpt.pt"
    f.write_bytes(b"weights v1")
    assert sha256_file(f) == hashlib.sha256(b"weights v1").hexdigest()
    assert sha256_file(f) == hashlib.sha256(b"weights v1").hexdigest()  # remembered: the same answer
    st = f.stat()
    f.write_bytes(b"weights v2")  # the same size: only the time tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert sha256_file(f) == hashlib.sha256(b"weights v2").hexdigest()
    f.write_bytes(b"weights v3, longer")
    assert sha256_file(f) == hashlib.sha256(b"weights v3, longer").hexdigest()
