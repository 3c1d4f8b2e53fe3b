"""`evalkit run --executor ray`: one suite's utterances in shards on Ray actors, into one run
folder and one MLflow run.

The driver (the `evalkit run` process) resolves the run as `evalkit run` does (runner.prepare,
with the device the cluster has), then hands runner.run an executor: the utterances left to
evaluate are cut into contiguous shards (SHARDS_PER_ACTOR per actor, at most MAX_SHARD
utterances each, so a fast actor takes more and a lost one costs little), and each shard goes to
an EvalActor (evalkit.sweep_ray), which evaluates exactly those utterances with the run's
configuration and sends back their rows and clips. The actor keeps the TTS model, Whisper and
the metrics loaded from one shard to the next. The driver writes each shard's clips into the
run folder and its rows to progress.jsonl as it arrives (so a driver that dies loses at most the
shards in flight: `evalkit run --resume OUT --executor ray` finishes the rest), then writes the
tables and logs the run exactly as a local run: it is the only writer of the folder and of MLflow.

An actor that dies costs its shard one try on another actor (evalkit.sweep_ray.Cluster.feed);
after MAX_ATTEMPTS its utterances are recorded as failed with the reason, never silently lost.
A shard refused for bad input (a model that does not load, another evaluation key on that
node) stops the run with that one line, before any row of it is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from . import pipeline, runner, sweep_ray
from .errors import EvalkitError
from .types import Row
from .untrusted import inside

SHARDS_PER_ACTOR = 2  # enough to even out actors; each shard ends with a short pipeline tail
MAX_SHARD = 64  # utterances: at 100-200 KB of audio each, a shard's answer stays small


def run(config: runner.RunConfig, address: str | None, gpus_per_actor: float | None,
        progress: pipeline.Progress | None, say: Callable[[str], None]) -> runner.RunResult:
    """Evaluate `config` on a Ray cluster (a local one without `address`); see the module docstring."""
    # Bad input (a suite, metric or store) fails before a cluster is started or joined.
    guess = config.device if config.device in ("cpu", "cuda") else "cpu"
    prepared = runner.prepare(dataclasses.replace(config, device=guess), remote=True)
    with sweep_ray.connect(address, config.device, gpus_per_actor, say) as cluster:
        config = dataclasses.replace(config, device=cluster.device)
        if cluster.device != guess:  # the cluster's GPUs decided: keys and settings with its device
            prepared = runner.prepare(config, remote=True)
        return runner.run(config, progress, prepared=prepared, executor=lambda work: _evaluate(cluster, work))


def shards(ids: list[str], actors: int) -> list[list[str]]:
    """`ids` cut into contiguous shards: SHARDS_PER_ACTOR per actor (one for a lone actor: there is
    nothing to even out, and each shard ends with a pipeline tail), none over MAX_SHARD."""
    if not ids:
        return []
    wanted = actors * SHARDS_PER_ACTOR if actors > 1 else 1
    n = min(len(ids), max(wanted, math.ceil(len(ids) / MAX_SHARD)))
    size = math.ceil(len(ids) / n)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


@dataclasses.dataclass
class _Collected:
    rows: list[Row] = dataclasses.field(default_factory=list)
    counts: pipeline.Counts = dataclasses.field(default_factory=pipeline.Counts)
    model: dict[str, str] | None = None
    adapter: str | None = None
    refused: str | None = None  # bad input from an actor: the run stops with it
    begun: bool = False


def _evaluate(cluster: sweep_ray.Cluster, work: runner.Work) -> runner.Evaluated:
    p = work.prepared
    todo = [u.id for u in p.suite.utterances if u.id not in work.skip]
    progress = work.progress or pipeline.Progress()
    progress.start("evaluate", len(todo))
    # --workers as given: by default the actor sizes its metric workers to its CPUs (EvalActor)
    config = dataclasses.replace(p.config, out_dir=None, tracking_uri=p.uri)
    got = _Collected()
    jobs: deque[sweep_ray.Job] = deque()
    for part in shards(todo, cluster.size):
        label = f"utterances {part[0]}..{part[-1]}" if len(part) > 1 else f"utterance {part[0]}"
        jobs.append(sweep_ray.Job(label, send=partial(_send, config=config, part=part, key=p.key),
                                  done=partial(_arrived, work, got, part, progress=progress),
                                  give_up=partial(_lost, work, got, part, progress=progress)))
    if work.idle is not None:  # the driver only waits from here on: MLflow's imports now
        work.idle()
    cluster.feed(jobs, stop=lambda: got.refused is not None)
    if got.refused is not None:
        raise EvalkitError(got.refused)
    if got.model is None or got.adapter is None:  # every shard lost: the model's provenance is the spec's
        got.model, got.adapter = {"model": p.config.model}, p.config.adapter or "unknown"
    return runner.Evaluated(pipeline.Evaluation(got.rows, got.counts), got.model, got.adapter)


def _send(actor: Any, config: runner.RunConfig, part: list[str], key: str) -> Any:
    return actor.evaluate_shard.remote(config, part, key)


def _arrived(work: runner.Work, got: _Collected, part: list[str], answer: dict[str, Any],
             progress: pipeline.Progress) -> None:
    """A shard came back: its clips into audio/, its rows to progress.jsonl (the driver writes both)."""
    if "error" in answer:  # bad input (EvalActor.evaluate_shard): no other actor would do better
        got.refused = got.refused or str(answer["error"])
        return
    rows: list[Row] = answer["rows"]
    if sorted(r.utterance_id for r in rows) != sorted(part):
        raise EvalkitError(f"a Ray actor sent back other utterances than the {len(part)} it was given")
    if not got.begun:  # the model loads somewhere: the run folder's record starts now
        work.begin()
        got.begun = True
    audio_dir = work.out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    sent: dict[str, bytes] = answer.get("audio") or {}
    for row in rows:
        if row.audio_path:
            name = f"{row.utterance_id}.wav"
            if row.audio_path != f"audio/{name}" or name not in sent:
                raise EvalkitError(f"a Ray actor sent utterance {row.utterance_id!r} without its clip")
            inside(audio_dir, name, "a clip from a Ray actor").write_bytes(sent[name])
    work.save(rows)
    got.rows.extend(rows)
    for field in dataclasses.fields(pipeline.Counts):
        setattr(got.counts, field.name, getattr(got.counts, field.name) + int(answer["counts"].get(field.name, 0)))
    if got.model is None:
        got.model, got.adapter = dict(answer["model"]), str(answer["adapter"])
    progress.advance(len(rows), stage="evaluate")


def _lost(work: runner.Work, got: _Collected, part: list[str], reason: str, progress: pipeline.Progress) -> None:
    """A shard no actor could finish: its utterances are recorded as failed with the reason."""
    if got.refused is not None:
        return
    if not got.begun:
        work.begin()
        got.begun = True
    by_id = {u.id: u for u in work.prepared.suite.utterances}
    rows = [Row(uid, by_id[uid].text, by_id[uid].tags, failure=f"evaluation failed on the Ray cluster: {reason}")
            for uid in part]
    work.save(rows)
    got.rows.extend(rows)
    progress.advance(len(rows), stage="evaluate")

