"""The errors evalkit turns into one-line messages and exit codes (see cli.main)."""


class EvalkitError(Exception):
    """Bad usage or bad input: the CLI prints the message on one line and exits 2."""

    exit_code = 2


class TrackingError(EvalkitError):
    """The evaluation finished and is saved locally, but the tracking server could not take it."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a terminated run stops as an interrupted one does:
    what finished is saved, temporary folders are removed, the message says how to resume."""

    exit_code = 143  # 128 + SIGTERM, what a supervisor expects


class StageFailed(EvalkitError):
    """The run finished and is saved, but a stage failed on every utterance: it measured nothing."""

    exit_code = 4


def first_line(exc: BaseException, limit: int | None = None, *, typed: bool = False) -> str:
    """The first line of `exc`'s message, cut at `limit` characters, for a one-line error: library
    messages can run to tracebacks. An empty message gives the type name instead, and `typed` puts
    the type name in front ("KeyError: 'x'") where the message alone would not say what failed."""
    lines = str(exc).strip().splitlines()
    name = type(exc).__name__
    if not lines:
        return name
    return f"{name}: {lines[0][:limit]}" if typed else lines[0][:limit]


def whole(exc: BaseException) -> str:
    """`exc`'s whole message on one line, after its type name: some libraries put what is wrong
    after the first line (a state-dict mismatch lists Missing key(s), size mismatch there)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MissingExtra(EvalkitError):
    """A part of evalkit whose optional dependencies (a pip extra) are not installed."""

    def __init__(self, requirement: str, extra: str, distribution: str = "evalkit-tts") -> None:
        self.requirement, self.extra, self.distribution = requirement, extra, distribution
        super().__init__(f"{requirement} is not installed: pip install '{distribution}[{extra}]'")

    def __reduce__(self):  # raised in a metric worker process, it must unpickle in the parent
        return type(self), (self.requirement, self.extra, self.distribution)
