"""Where a run spends its time: `evalkit run --trace FILE` writes a Chrome/Perfetto trace.

The file is the Trace Event Format (`{"traceEvents": [...]}`): an "X" (complete) event per span,
"M" (metadata) events naming each process and thread. Open it in https://ui.perfetto.dev or
chrome://tracing (both work offline once the page is loaded).

One recorder per process, off unless tracing was asked for: `span(name)` then returns a shared
null context, so instrumented code costs a function call and nothing is kept. `start(path)` (the
CLI's --trace) turns it on and sets $EVALKIT_TRACE, which spawned metric workers inherit: their
recorder starts with them (`worker_start`), and they send their spans back with their results
(`drain`, `adopt`), because only the main process writes the file (`stop`, atomically, also when
the run is interrupted). Every timestamp is wall-clock time.time_ns, the one clock all processes share,
so the spans of the main process and its workers line up.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import EvalkitError

ENV = "EVALKIT_TRACE"
_IMPORTED_NS = time.time_ns()  # when cli.py's imports reached this module: start-up is split here
_NULL = contextlib.nullcontext()


class Recorder:
    """Trace events of this process (and those adopted from workers), in memory until written."""

    def __init__(self, process_name: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._named: set[tuple[int, int]] = set()  # (pid, tid) whose thread_name is recorded
        self._process_name = process_name
        self._pid = os.getpid()
        self._meta(self._pid, 0, "process_name", process_name)

    def add(self, name: str, cat: str, start_ns: int, end_ns: int, args: dict[str, Any] | None = None) -> None:
        tid = threading.get_native_id()
        # Whole microseconds, each end rounded down like each start: spans nested in time stay nested
        begin, end = start_ns // 1000, max(start_ns, end_ns) // 1000
        event = {"name": name, "cat": cat, "ph": "X", "ts": begin, "dur": end - begin, "pid": self._pid, "tid": tid}
        if args:
            event["args"] = {k: v if isinstance(v, int | float | str | bool) or v is None else str(v)
                             for k, v in args.items()}
        with self._lock:
            if (self._pid, tid) not in self._named:
                self._named.add((self._pid, tid))
                self._meta(self._pid, tid, "thread_name", threading.current_thread().name)
            self.events.append(event)

    def _meta(self, pid: int, tid: int, what: str, name: str) -> None:
        self.events.append({"name": what, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})

    def drain(self) -> list[dict[str, Any]]:
        """Every event so far, removed (a worker sends them back with its results)."""
        with self._lock:
            out, self.events = self.events, []
            self._named.clear()  # the names left with the events: record them again with the next span
            self._meta(self._pid, 0, "process_name", self._process_name)
        return out

    def adopt(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.events.extend(events)


class _Span:
    __slots__ = ("name", "cat", "args", "t0")

    def __init__(self, name: str, cat: str, args: dict[str, Any]) -> None:
        self.name, self.cat, self.args = name, cat, args

    def __enter__(self) -> _Span:
        self.t0 = time.time_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        recorder = _recorder
        if recorder is not None:
            recorder.add(self.name, self.cat, self.t0, time.time_ns(), self.args)


_recorder: Recorder | None = None
_path: Path | None = None
_previous_env: str | None = None


def enabled() -> bool:
    return _recorder is not None


def span(name: str, cat: str = "evalkit", **args: Any) -> contextlib.AbstractContextManager[Any]:
    """A timed span on the calling thread; a null context (nothing recorded) when tracing is off."""
    if _recorder is None:
        return _NULL
    return _Span(name, cat, args)


def add(name: str, cat: str, start_ns: int, end_ns: int, **args: Any) -> None:
    """A span whose times were taken already (start-up before the recorder existed)."""
    if _recorder is not None:
        _recorder.add(name, cat, start_ns, end_ns, args)


def drain() -> list[dict[str, Any]]:
    return _recorder.drain() if _recorder is not None else []


def adopt(events: list[dict[str, Any]]) -> None:
    if _recorder is not None and events:
        _recorder.adopt(events)


def events() -> list[dict[str, Any]]:
    """A copy of what is recorded so far (tests)."""
    return list(_recorder.events) if _recorder is not None else []


def process_start_ns() -> int | None:
    """When this process started, on time.time_ns's clock (Linux: /proc, to a clock tick), or None."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # seconds after boot (field 22 of stat)
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time_ns() - int(age * 1e9) if age >= 0 else None


def check_path(path: Path) -> Path:
    """The trace file's path, refused (one line, before any work) unless a file can be written there."""
    if path.is_dir():
        raise EvalkitError(f"--trace {path}: is a folder; give a file name (e.g. {path / 'trace.json'})")
    folder = path.parent
    if not folder.is_dir():
        raise EvalkitError(f"--trace {path}: the folder {folder} does not exist")
    try:  # the write at the end goes through a temporary file in the same folder: try one now
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise EvalkitError(f"--trace {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path


def start(path: Path, startup: bool = False) -> None:
    """Trace this process, and the metric workers it spawns from now on, into `path` (see `stop`).
    `startup` (the CLI): the process's start-up so far is two spans, split where cli.py imported
    this module."""
    global _recorder, _path, _previous_env
    path = check_path(path).resolve()
    now = time.time_ns()
    _recorder = Recorder("evalkit")
    _path = path
    _previous_env = os.environ.get(ENV)
    os.environ[ENV] = str(path)  # metric workers spawned from now on inherit it: see worker_start
    if startup:
        began = process_start_ns()
        if began is not None and began <= _IMPORTED_NS:
            add("start-up: interpreter, typer, rich, first evalkit imports", "startup", began, _IMPORTED_NS)
        add("start-up: the rest of the CLI imports, arguments", "startup", _IMPORTED_NS, now)


def stop() -> Path | None:
    """Write the trace (atomically: a complete file or none) and turn tracing off; returns the path."""
    global _recorder, _path
    if _path is None:  # never started here (a command without --trace): nothing to write or restore
        return None
    recorder, path, _recorder, _path = _recorder, _path, None, None
    if _previous_env is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = _previous_env
    events = list(recorder.events) if recorder is not None else []  # a copy: a late thread may still add
    data = {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"clock": "time.time_ns (Unix epoch), microseconds", "evalkit_pid": os.getpid()}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def tracing(path: Path | None) -> Iterator[None]:
    """`start(path)` .. `stop()` around a command, the trace written however it ends; no-op for None."""
    if path is None:
        yield
        return
    start(path)
    try:
        yield
    finally:
        stop()


def worker_start() -> None:
    """The first thing a spawned metric worker does: with $EVALKIT_TRACE inherited, record from here
    on (and the start-up that came before); the spans go back with each result (`drain`)."""
    global _recorder
    if os.environ.get(ENV) and _recorder is None:
        _recorder = Recorder("evalkit metric worker")
        began = process_start_ns()
        if began is not None:
            add("start-up: interpreter, imports", "startup", began, time.time_ns())
