"""evalkit correlate: known answers for the coefficients and their bootstrap, a planted relation
recovered and a shuffled one not, system level over 3 systems, the metric matrix, the ratings
formats and their bad input, and the command end to end with a real MLflow sqlite store.
Run folders are built with evalkit.record.write: no model is loaded."""

from __future__ import annotations

import io
import json
import math
import sqlite3
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evalkit import correlate as corr
from evalkit import correlation, record, runs
from evalkit.errors import EvalkitError
from evalkit.record import RunRecord
from evalkit.types import Row

N = 40  # utterances per run
SYSTEMS = ("sys-a", "sys-b", "sys-c")
METRICS = {"intelligibility": {"cer": False, "wer": False, "char_sub": False},
           "dnsmos": {"dnsmos_ovrl": True}, "timing": {"duration_ratio": None}}


def write_run(folder: Path, values: dict[str, list[float]], tags: list[tuple[str, ...]], run_id: str,
              model: str | None = None) -> Path:
    """A finished run folder as evalkit.record writes it: summary.json and utterances.jsonl."""
    summary = RunRecord.from_json({
        "run_id": run_id, "params": {"model": model or folder.name}, "suite": {"name": "toy", "digest": "d1"},
        "tags": {"evalkit.textnorm_version": "2"},
        "metrics": {name: {"version": "1", "higher_is_better": keys, "counts": ["char_sub"] if "cer" in keys else [],
                           "headline": next(iter(keys))} for name, keys in METRICS.items()},
        "aggregates": {}})
    rows = [Row(f"u{i:02d}", f"sentence {i}", tags[i], {k: v[i] for k, v in values.items()})
            for i in range(len(tags))]
    folder.mkdir(parents=True)
    record.write(folder, summary, rows)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three systems; CER drives the ratings (planted), DNSMOS is noise, WER is CER rescaled (redundant)."""
    root = tmp_path_factory.mktemp("correlate")
    rng = np.random.default_rng(7)
    tags = [("numbers",) if i % 2 else ("plain",) for i in range(N)]
    folders, cer = [], {}
    for s, name in enumerate(SYSTEMS):
        c = np.clip(rng.uniform(0, 0.3, N) + 0.1 * s, 0, 1)
        cer[name] = c
        values = {"cer": list(c), "wer": list(2 * c + 0.01 * rng.normal(size=N)), "char_sub": list(np.round(10 * c)),
                  "dnsmos_ovrl": list(rng.uniform(2, 4, N)), "duration_ratio": list(rng.uniform(0.8, 1.2, N))}
        folders.append(write_run(root / name, values, tags, f"{s + 1:032x}"))
    # Ratings: a known decreasing function of CER plus noise, two raters per clip.
    planted = root / "ratings.csv"
    lines = ["run,utterance_id,score,rater,test,timestamp"]
    for name in SYSTEMS:
        for i in range(N):
            for rater in ("r1", "r2"):
                score = 5.0 - 8.0 * cer[name][i] + rng.normal(0, 0.4)
                lines.append(f"{name},u{i:02d},{score:.3f},{rater},mos,2025-01-01T00:00:00")
    planted.write_text("\n".join(lines) + "\n")
    # The same scores, shuffled across all rows: no relation left.
    shuffled = root / "shuffled.csv"
    head, *body = lines
    cells = [b.split(",") for b in body]
    scores = [c[2] for c in cells]
    order = np.random.default_rng(3).permutation(len(scores))
    shuffled.write_text("\n".join([head] + [",".join([c[0], c[1], scores[j], *c[3:]])
                                            for c, j in zip(cells, order, strict=True)]) + "\n")
    loaded = [runs.load_run(str(f), with_audio=False) for f in folders]
    return {"root": root, "folders": folders, "runs": loaded, "specs": [str(f) for f in folders],
            "planted": planted, "shuffled": shuffled, "cer": cer}


def result_of(world, ratings: Path, by_tag: bool = False) -> corr.Result:
    return corr.correlate(world["runs"], world["specs"], corr.read_ratings(ratings), by_tag=by_tag)


def key(section: corr.Section, name: str) -> corr.KeyCorrelation:
    return next(k for k in section.keys if k.key == name)


# --- the coefficients and their bootstrap -----------------------------------------------------


def test_the_weighted_bootstrap_equals_the_coefficients_of_the_repeated_sample():
    """Each resample is computed from weights; it must be exactly scipy on the pairs written out
    (ties included: rounded values tie often)."""
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=30), 1)
    y = np.round(x + rng.normal(size=30))
    clusters = np.arange(30) // 3
    codes = correlation._dense(np.array([str(c) for c in clusters]))
    w = correlation._draws(codes, 20, 5)[:, codes]
    gx, gy = correlation._groups(x, w), correlation._groups(y, w)
    pearson = correlation._weighted_pearson(x, y, w)
    spearman = correlation._weighted_pearson(correlation._midranks(gx), correlation._midranks(gy), w)
    kendall = correlation._weighted_kendall(x, y, w, gx[1], gy[1])
    for b in range(20):
        rep = np.repeat(np.arange(30), w[b].astype(int))
        assert pearson[b] == pytest.approx(stats.pearsonr(x[rep], y[rep]).statistic, abs=1e-12)
        assert spearman[b] == pytest.approx(stats.spearmanr(x[rep], y[rep]).statistic, abs=1e-12)
        assert kendall[b] == pytest.approx(stats.kendalltau(x[rep], y[rep]).statistic, abs=1e-12)


def test_system_resample_coefficients_equal_scipy_row_by_row():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 5)), np.round(rng.normal(size=(7, 5)))
    for name, rows in (("pearsonr", correlation._row_pearson), ("spearmanr", correlation._row_spearman),
                       ("kendalltau", correlation._row_kendall)):
        expected = [getattr(stats, name)(a, b).statistic for a, b in zip(x, y, strict=True)]
        assert np.allclose(rows(x, y), expected), name


def test_too_few_pairs_or_a_constant_side_give_a_reason_not_a_number():
    assert "at least 3" in (correlation.paired([1, 2], [1, 2], ["a", "b"]).note or "")
    assert "metric is constant" in (correlation.paired([1, 1, 1], [1, 2, 3], ["a", "b", "c"]).note or "")
    c = correlation.paired([1, 2, 3, 4], [1, 3, 2, 4], ["a", "b", "c", "d"])
    assert c.note is None and c.n == 4 and math.isfinite(c.spearman.ci_low)


# --- planted, shuffled, scipy, systems, matrix ------------------------------------------------


def test_a_planted_relation_is_recovered_with_its_sign_and_a_ci_excluding_zero(world):
    result = result_of(world, world["planted"])
    cer = key(result.overall, "cer")
    assert cer.utterance.n == N * len(SYSTEMS)
    for est in (cer.utterance.pearson, cer.utterance.spearman, cer.utterance.kendall):
        assert est.value < -0.5 and est.ci_high < 0, est  # lower CER, higher ratings: negative, sure
    assert cer.expected_sign == -1 and cer.agrees is True
    assert result.overall.keys[0].key in ("cer", "wer")  # the ranking puts the planted key (or its twin) first
    dnsmos = key(result.overall, "dnsmos_ovrl")
    assert dnsmos.utterance.spearman.ci_low < 0 < dnsmos.utterance.spearman.ci_high  # noise: CI includes 0
    assert "char_sub" not in result.directions  # a count, as in compare
    assert key(result.overall, "duration_ratio").expected_sign is None
    assert result.ratings == 2 * N * len(SYSTEMS) and result.raters == 2


def test_shuffled_ratings_give_intervals_including_zero(world):
    result = result_of(world, world["shuffled"])
    for k in result.overall.keys:
        s = k.utterance.spearman
        assert s.ci_low < 0 < s.ci_high, (k.key, s)


def test_coefficients_equal_scipy_on_the_same_pairs(world):
    """The pairs rebuilt here independently: mean rating per (run, utterance) against the value."""
    result = result_of(world, world["planted"])
    scores: dict[tuple[str, str], list[float]] = {}
    for line in world["planted"].read_text().splitlines()[1:]:
        run, uid, score, *_ = line.split(",")
        scores.setdefault((run, uid), []).append(float(score))
    x = [world["cer"][run][int(uid[1:])] for run, uid in scores]
    y = [float(np.mean(v)) for v in scores.values()]
    cer = key(result.overall, "cer")
    assert cer.utterance.pearson.value == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-12)
    assert cer.utterance.spearman.value == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert cer.utterance.kendall.value == pytest.approx(stats.kendalltau(x, y).statistic, rel=1e-12)
    # System level: one point per system, its mean rating against its mean CER.
    sx = [float(np.mean(world["cer"][s])) for s in SYSTEMS]
    sy = [float(np.mean([np.mean(scores[(s, f"u{i:02d}")]) for i in range(N)])) for s in SYSTEMS]
    assert cer.system.n == 3
    assert cer.system.pearson.value == pytest.approx(stats.pearsonr(sx, sy).statistic, rel=1e-12)
    assert cer.system.spearman.value == pytest.approx(stats.spearmanr(sx, sy).statistic)
    assert cer.system.kendall.value == pytest.approx(stats.kendalltau(sx, sy).statistic)


def test_system_level_with_three_systems_and_not_with_two(world):
    result = result_of(world, world["planted"])
    cer = key(result.overall, "cer")
    assert result.overall.systems == 3 and result.overall.system_note is None
    assert cer.system.spearman.value == -1.0  # the system offsets are far larger than the noise
    assert cer.system.spearman.ci_high < 0 and cer.system.note is None
    two = corr.correlate(world["runs"][:2], world["specs"][:2], corr.read_ratings(world["planted"]))
    assert "at least 3" in (two.overall.system_note or "")
    assert math.isnan(key(two.overall, "cer").system.spearman.value)
    assert any("'sys-c'" in n and "left out" in n for n in two.notes)  # ratings of a run not given


def test_the_metric_matrix_is_symmetric_with_ones_on_the_diagonal(world):
    m = result_of(world, world["planted"]).matrix
    rho = np.array(m.rho)
    assert set(m.keys) == {"cer", "wer", "dnsmos_ovrl", "duration_ratio"}
    assert np.allclose(rho, rho.T) and np.all(np.diag(rho) == 1.0)
    i, j = m.keys.index("cer"), m.keys.index("wer")
    assert rho[i, j] > 0.95 and {"cer", "wer"} in [{a, b} for a, b, _ in m.redundant()]
    assert m.n[i][j] == N * len(SYSTEMS)


def test_by_tag_gives_each_tag_its_own_section(world):
    result = result_of(world, world["planted"], by_tag=True)
    assert [s.tag for s in result.by_tag] == ["plain", "numbers"]
    for s in result.by_tag:
        assert s.pairs == N // 2 * len(SYSTEMS)
        assert key(s, "cer").utterance.spearman.ci_high < 0


# --- ratings formats and matching ------------------------------------------------------------


def test_runs_are_matched_by_spec_run_id_mlflow_id_and_folder_name(world, tmp_path):
    a, b, c = world["runs"]
    spec_a = world["specs"][0]
    lines = ["Run , Utterance_ID,SCORE", f"{spec_a},u00,4", f"{b.summary.run_id},u01,3", "sys-c,u02,2",
             "anchor:reference,u00,5", "sys-a,u99,1"]
    (tmp_path / "r.csv").write_text("\ufeff" + "\n".join(lines) + "\n")  # with a spreadsheet's byte order mark
    ratings = corr.read_ratings(tmp_path / "r.csv")
    assert [r.rater for r in ratings.ratings] == [None] * 5
    result = corr.correlate(world["runs"], world["specs"], ratings)
    assert [(p.run, p.utterance_id) for p in result.points] == [(0, "u00"), (1, "u01"), (2, "u02")]
    assert any("'anchor:reference'" in n for n in result.notes)
    assert any("utterance ids the run does not have" in n for n in result.notes)


def test_a_listening_database_is_read_with_the_documented_query(world, tmp_path):
    db = tmp_path / "listen.db"
    with sqlite3.connect(db) as con:
        # The columns of evalkit listen's table (evalkit/listen/store.py) that the query reads or filters on.
        con.execute("CREATE TABLE ratings (id INTEGER PRIMARY KEY, rater TEXT, item TEXT, test TEXT, repeat_of TEXT, "
                    "run TEXT, system_kind TEXT, utterance_id TEXT, score REAL, at REAL)")
        con.executemany("INSERT INTO ratings (run, utterance_id, score, rater, test, repeat_of, system_kind) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [("sys-a", "u00", 4.0, "r1", "mos", None, "run"), ("sys-b", "u00", 2.0, "r1", "mushra", None,
                                                                             "run"),
                         ("sys-a", "u01", 1.0, "r2", "ab", None, "run"),  # a preference, not a score
                         ("sys-a", "u00", 4.5, "r1", "mos", "item-1", "run"),  # an attention repeat
                         ("reference", "u00", 5.0, "r1", "mos", None, "reference")])  # a hidden anchor
    ratings = corr.read_ratings(db)
    assert [(r.run, r.utterance_id, r.score, r.rater) for r in ratings.ratings] == [
        ("sys-a", "u00", 4.0, "r1"), ("sys-b", "u00", 2.0, "r1")]
    assert ratings.left_out_ab == 1


def test_the_listening_export_is_read_as_it_is_written(world, tmp_path):
    """evalkit listen's CSV (its own writer): run = the evalkit run id, A/B rows left out."""
    export = pytest.importorskip("evalkit.listen.export")
    a, b, _ = world["runs"]
    rows = [{"run": a.summary.run_id, "utterance_id": "u00", "score": "4", "rater": "ann", "test": "mos",
             "timestamp": "2025-01-01T00:00:00.000Z", "model": "m", "item": "i1", "token": "t1"},
            {"run": b.summary.run_id, "utterance_id": "u01", "score": "0.5", "rater": "ann", "test": "ab",
             "timestamp": "2025-01-01T00:00:01.000Z", "model": "m", "item": "i2", "token": "t2"}]
    export.write_csv(tmp_path / "listen.csv", rows)
    ratings = corr.read_ratings(tmp_path / "listen.csv")
    assert [(r.run, r.utterance_id, r.score, r.rater) for r in ratings.ratings] == [(a.summary.run_id, "u00", 4.0,
                                                                                     "ann")]
    assert ratings.left_out_ab == 1
    result = corr.correlate(world["runs"], world["specs"], ratings)
    assert [(p.run, p.utterance_id) for p in result.points] == [(0, "u00")]


@pytest.mark.parametrize(("text", "message"), [
    ("run,utterance,score\na,u00,1\n", "no column utterance_id"),
    ("run,utterance_id,score\nsys-a,u00,good\n", "line 2: score 'good' is not a number"),
    ("run,utterance_id,score\nsys-a,u00,nan\n", "is not a number"),
    ("", "empty"),
    ("run,utterance_id,score\n", "holds no ratings"),
])
def test_bad_ratings_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(EvalkitError, match=message):
        corr.read_ratings(path)


def test_ratings_that_match_no_run_are_refused(world, tmp_path):
    (tmp_path / "r.csv").write_text("run,utterance_id,score\nsomeone-else,u00,3\n")
    with pytest.raises(EvalkitError, match="no rating names one of the runs given"):
        corr.correlate(world["runs"], world["specs"], corr.read_ratings(tmp_path / "r.csv"))


def test_a_name_that_fits_two_runs_is_refused(world, tmp_path):
    twin = write_run(tmp_path / "other" / "sys-a", {"cer": [0.1] * N}, [()] * N, "f" * 32)
    loaded = [*world["runs"][:1], runs.load_run(str(twin), with_audio=False)]
    (tmp_path / "r.csv").write_text("run,utterance_id,score\nsys-a,u00,3\n")
    with pytest.raises(EvalkitError, match="fits"):
        corr.correlate(loaded, [world["specs"][0], str(twin)], corr.read_ratings(tmp_path / "r.csv"))


# --- the command -------------------------------------------------------------------------------


def evalkit(*args: str) -> tuple[int, str, str]:
    """The CLI in this process: cli.main, with correlate/calibrate registered on a bare app until
    cli.py registers them itself."""
    import typer

    from evalkit import cli
    from evalkit.cli_human import register

    app = cli.app
    if not any(c.name == "correlate" for c in cli.app.registered_commands):
        app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
        register(app)
    out, err = io.StringIO(), io.StringIO()
    old_app, old_argv = cli.app, sys.argv
    cli.app, sys.argv = app, ["evalkit", *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        cli.app, sys.argv = old_app, old_argv
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_the_command_writes_the_report_and_logs_it_to_mlflow(world, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "corr"
    code, stdout, stderr = evalkit("correlate", *world["specs"], "--ratings", str(world["planted"]), "--by", "tag",
                                   "--out", str(out), "--tracking-uri", uri)
    assert code == 0, stderr
    assert "cer ↓" in stdout and "system level" in stdout and "by tag" in stdout
    assert "redundant" in stdout and "cer ~ wer" in stdout.replace("wer ~ cer", "cer ~ wer")
    html = (out / "index.html").read_text()
    assert html.count("data:image/svg+xml;base64,") >= 5  # a scatter plot per key and the matrix
    assert "Tag numbers" in html and "<script" not in html
    assert "| cer ↓ |" in (out / "summary.md").read_text()
    doc = json.loads((out / "correlation.json").read_text())
    assert doc["overall"]["keys"][0]["utterance"]["spearman"]["ci"][1] < 0
    assert {p.name for p in (out / "figures").iterdir()} >= {"cer.svg", "metric-matrix.svg"}
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("evalkit-correlate").experiment_id])
    assert logged.data.metrics["spearman/utterance/cer"] < 0
    assert logged.data.params["ratings_sha256"] == doc["ratings"]["sha256"]
    artifacts = {f.path for f in client.list_artifacts(logged.info.run_id)}
    assert {"index.html", "summary.md", "correlation.json", "figures"} <= artifacts
    assert "figures/cer.svg" in {f.path for f in client.list_artifacts(logged.info.run_id, "figures")}


@pytest.mark.parametrize(("which", "message"), [
    ("no-such-run", "neither a run folder"),
    ("bad-csv", "no column score"),
    ("no-overlap", "no rating names one of the runs given"),
])
def test_bad_input_is_one_line_and_exit_2(world, tmp_path, which, message):
    ratings = world["planted"]
    specs = list(world["specs"])
    if which == "no-such-run":
        specs.append(str(tmp_path / "missing"))
    elif which == "bad-csv":
        ratings = tmp_path / "bad.csv"
        ratings.write_text("run,utterance_id\nsys-a,u00\n")
    else:
        ratings = tmp_path / "other.csv"
        ratings.write_text("run,utterance_id,score\nnobody,u00,3\n")
    code, _, stderr = evalkit("correlate", *specs, "--ratings", str(ratings), "--out", str(tmp_path / "o"),
                              "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "o").exists()


def test_templates_never_mark_a_value_safe_and_run_strings_are_escaped(world, tmp_path):
    from evalkit import correlate_report

    folder = correlate_report.template_dir()
    for name in ("correlate.html.j2", "correlate.md.j2"):
        source = (folder / name).read_text(encoding="utf-8")
        compact = source.replace(" ", "")
        assert "|safe" not in compact and "autoescapefalse" not in compact and "Markup" not in source, name
    rng = np.random.default_rng(0)
    hostile = write_run(tmp_path / "hostile", {"cer": list(rng.uniform(0, 1, N))}, [("t",)] * N, "e" * 32,
                        model="<script>alert(1)</script>|*x*")
    ratings = tmp_path / "r.csv"
    ratings.write_text("run,utterance_id,score\n" + "".join(f"hostile,u{i:02d},{rng.uniform(1, 5):.2f}\n"
                                                             for i in range(N)))
    result = corr.correlate([runs.load_run(str(hostile), with_audio=False)], [str(hostile)],
                            corr.read_ratings(ratings))
    correlate_report.write(tmp_path / "out", result)
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    with pytest.raises(EvalkitError, match="holds other files"):  # never writes into a foreign folder
        correlate_report.write(tmp_path, result)
