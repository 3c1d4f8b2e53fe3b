"""The errors evalkit turns into one-line messages and exit codes (see cli.main)."""


class EvalkitError(Exception):
    """Bad usage or bad input: the CLI prints the message on one line and exits 2."""

    exit_code = 2


class TrackingError(EvalkitError):
    """The evaluation finished and is saved locally, but the tracking server could not take it."""

    exit_code = 3
