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
