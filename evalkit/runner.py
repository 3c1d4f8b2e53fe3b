"""`evalkit run` without the terminal: resolve everything, evaluate, write the local record, log."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping

from . import __version__, adapters, asr as asr_mod, pipeline, plugins, record, references, textnorm, tracking
from . import suite as suite_mod
from .errors import EvalkitError
from .protocols import Metric


@dataclass(frozen=True)
class RunConfig:
    suite: str
    model: str
    adapter: str | None = None
    asr: str = asr_mod.DEFAULT
    metrics: tuple[str, ...] | None = None  # None: every installed metric that needs no reference
    device: str = "auto"
    limit: int | None = None
    out_dir: Path | None = None
    tracking_uri: str | None = None  # None: the embedded sqlite store under ./evalkit-runs
    experiment: str | None = None  # None: "evalkit-<suite name>"
    tags: Mapping[str, str] = field(default_factory=dict)
    reference_run: str | None = None  # a run folder, wav folder or MLflow run id; None: the suite's refs


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    summary: dict
    rows: list
    tracking_error: str | None


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise EvalkitError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:
        return "cpu"


def load_metrics(names: tuple[str, ...] | None, have_references: bool) -> list[Metric]:
    """The named metrics, or by default every installed one whose inputs this run has."""
    if names is None:
        found = [plugins.load_target(t)() for t, _ in plugins.registered(plugins.METRICS).values()]
        return [m for m in found if have_references or not m.needs_reference]
    return [plugins.load(plugins.METRICS, n)() for n in names]


def run(config: RunConfig, progress: pipeline.Progress | None = None) -> RunResult:
    if config.limit is not None and config.limit < 1:
        raise EvalkitError("--limit must be at least 1")
    suite = suite_mod.load(config.suite).limited(config.limit)
    uri = config.tracking_uri or tracking.default_uri()
    refs = (references.resolve(config.reference_run, suite, uri) if config.reference_run
            else references.from_suite(suite))
    metrics = load_metrics(config.metrics, refs is not None)
    device = resolve_device(config.device)
    experiment = config.experiment or f"evalkit-{suite.name}"
    tracking_problem = _preflight(uri)

    started = time.time()
    out_dir = config.out_dir or Path("evalkit-runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{suite.name}"
    adapter = adapters.resolve(config.model, config.adapter, device)
    try:
        _prepare_out(out_dir)
        asr = asr_mod.resolve(config.asr, device) if any(m.needs_transcript for m in metrics) else None
        evaluation = pipeline.evaluate(suite, adapter, asr, metrics, out_dir, progress,
                                       refs.paths if refs else None)
        rows = evaluation.rows
        model_info = dict(adapter.describe())
    finally:
        adapter.close()
    finished = time.time()

    asr_info = dict(asr.describe()) if asr is not None else {}
    summary = _summary(config, suite, adapter, model_info, asr_info, metrics, device, rows,
                       started, finished, uri, experiment, refs)
    summary["cache"] = dataclasses.asdict(evaluation.counts)
    record.write(out_dir, summary, rows)
    try:
        if tracking_problem:
            raise tracking_problem
        tracking.log_run(out_dir, uri, experiment)
        tracking_error = None
    except EvalkitError as exc:
        tracking_error = str(exc)
    summary, _ = record.read(out_dir)
    return RunResult(out_dir, summary, rows, tracking_error)


def _preflight(uri: str) -> EvalkitError | None:
    """An unreachable server is known before the work starts, but the work is still done and kept."""
    try:
        tracking.check_reachable(uri)
    except EvalkitError as exc:
        return exc
    return None


def _prepare_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise EvalkitError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None
    if (out_dir / record.SUMMARY).exists():
        raise EvalkitError(f"{out_dir} already holds a finished run; choose another --out")


def _summary(config, suite, adapter, model_info, asr_info, metrics, device, rows, started, finished,
             uri, experiment, refs) -> dict:
    run_id = uuid.uuid4().hex
    metric_info = {m.name: {"version": m.version, "sample_rate": m.sample_rate,
                            "options": dict(getattr(m, "options", {})),
                            "higher_is_better": dict(m.higher_is_better),
                            "counts": list(getattr(m, "counts", ()))} for m in metrics}
    params = {
        "suite": suite.name,
        "suite_version": suite.version,
        "suite_utterances": len(suite.utterances),
        "limit": config.limit,
        "model": config.model,
        "adapter": adapter.name,
        "asr": config.asr if asr_info else "none",
        "asr_options": asr_info.get("options", ""),
        "metrics": ",".join(metric_info),
        "device": device,
        "textnorm_version": textnorm.VERSION,
        "reference": refs.source if refs else "none",
        **{f"metric.{n}.version": i["version"] for n, i in metric_info.items()},
        **{f"metric.{n}.options": json.dumps(i["options"], sort_keys=True) for n, i in metric_info.items() if i["options"]},
    }
    tags = {
        "evalkit.run_id": run_id,
        "evalkit.version": __version__,
        "evalkit.git_sha": _git_sha(),
        "evalkit.suite": suite.name,
        "evalkit.suite_digest": suite.digest,
        "evalkit.model": config.model,
        "evalkit.model_sha256": model_info.get("model_sha256", ""),
        "evalkit.adapter": adapter.name,
        "evalkit.asr_engine": asr_info.get("engine", "none"),
        "evalkit.asr_model": asr_info.get("model", "none"),
        "evalkit.asr_model_sha256": asr_info.get("model_sha256", ""),
        "evalkit.asr_settings_digest": asr_info.get("settings_digest", ""),
        "evalkit.textnorm_version": textnorm.VERSION,
        "evalkit.reference": refs.source if refs else "none",
        "evalkit.reference_digest": refs.digest if refs else "",
        **dict(config.tags),
    }
    return {
        "run_id": run_id,
        "run_name": f"{suite.name}:{Path(config.model).name}",
        "evalkit_version": __version__,
        "started_unix": started,
        "finished_unix": finished,
        "wall_seconds": finished - started,
        "suite": {"name": suite.name, "version": suite.version, "language": suite.language,
                  "digest": suite.digest, "source": suite.source, "utterances": len(suite.utterances)},
        "model": model_info,
        "adapter": adapter.name,
        "asr": asr_info,
        "metrics": metric_info,
        "params": params,
        "tags": tags,
        "aggregates": pipeline.aggregate(rows, metrics),
        "tracking": {"uri": uri, "experiment": experiment, "run_id": None},
    }


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
