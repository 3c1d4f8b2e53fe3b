"""Any program that writes a wav: MODEL is `cmd:TEMPLATE`, e.g. `cmd:espeak-ng -v en-us -w {out} {text}`.

TEMPLATE is split like a POSIX shell command line (shlex) first; only then are the placeholders
`{text}`, `{out}` (the wav file the program must write), `{speaker}` (empty if none), `{lang}` and
`{id}` replaced inside each argument. A value therefore always stays one argument, whatever it
contains, and no shell ever runs. A value starting with "-" in an argument before a literal `--`
fails its sentence rather than reach the program as an option; write
`cmd:espeak-ng -v en-us -w {out} -- {text}` to allow such texts. The text is also written to the
program's stdin, so `{text}` is optional (`cmd:espeak-ng --stdin -w {out}`). Wrapping in
`sh -c` is the template's own choice: pass values as positional arguments
(`cmd:sh -c 'tts "$1" > "$2"' _ {text} {out}`), never inside the script, or the shell parses them.

Each sentence may take EVALKIT_CMD_TIMEOUT seconds (default 120); the whole process group is
killed on expiry, so helpers it started do not linger.

model_sha256 covers the template, the executable file and every literal argument that names an
existing file (a script, a voice file): a changed script is a changed model.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..audio import duration_cap, read_wav
from ..cache import sha256_file
from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest

PREFIX = "cmd:"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
FIELDS = ("text", "out", "speaker", "lang", "id")
TIMEOUT_ENV = "EVALKIT_CMD_TIMEOUT"


def _tail(stderr: bytes, limit: int = 300) -> str:
    # One line: the core keeps only the first line of a failure message.
    text = " | ".join(line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip())
    return text[-limit:] or "no stderr"


class CommandAdapter:
    name = "cmd"
    version = "1"
    batch_size = 1
    priority = 41
    timeout_s = 120.0

    @classmethod
    def claims(cls, model: str) -> bool:
        return model.startswith(PREFIX)

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.template = model[len(PREFIX):] if model.startswith(PREFIX) else model
        try:
            argv = shlex.split(self.template)
        except ValueError as exc:
            raise EvalkitError(f"cannot parse command template {self.template!r}: {exc}") from None
        if not argv:
            raise EvalkitError("empty command: give MODEL as cmd:PROGRAM ARGS... with {out} where the wav goes")
        unknown = sorted({m for a in argv for m in PLACEHOLDER.findall(a)} - set(FIELDS))
        if unknown:
            known = ", ".join(f"{{{f}}}" for f in FIELDS)
            raise EvalkitError(f"unknown placeholder {{{unknown[0]}}} in command (known: {known})")
        if not any("{out}" in a for a in argv):
            raise EvalkitError("command template has no {out}: the program must write its wav to {out}")
        if PLACEHOLDER.search(argv[0]):
            raise EvalkitError("the program name cannot be a placeholder: name the executable literally")
        exe = shutil.which(argv[0])
        if exe is None:
            raise EvalkitError(f"executable not found: {argv[0]!r} (not on PATH and not an executable file)")
        self.argv = [exe, *argv[1:]]
        # Arguments after a literal "--" are operands for getopt-style programs, whatever they start with.
        self._options_end = argv.index("--") if "--" in argv else len(argv)
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is not None:
            try:
                self.timeout_s = float(raw)
            except ValueError:
                self.timeout_s = -1.0
            if not self.timeout_s > 0:
                raise EvalkitError(f"{TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
        self.model = PREFIX + self.template
        self.device = "cpu"
        self._rates: set[int] = set()
        self._count = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="evalkit-cmd-")

    def _argv(self, values: dict[str, str]) -> list[str]:
        out = [self.argv[0]]
        for i, arg in enumerate(self.argv[1:], 1):
            # One regex pass: a value containing "{out}" is never substituted again.
            new = PLACEHOLDER.sub(lambda m: values[m.group(1)], arg)
            if new.startswith("-") and not arg.startswith("-") and i < self._options_end:
                raise ValueError(f"argument {new[:40]!r} would be read as an option: put -- before {arg} "
                                 "in the template")
            out.append(new)
        return out

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        return [self._one(req) for req in requests]

    def _one(self, req: SynthesisRequest) -> Audio:
        self._count += 1
        out = Path(self._tmp.name) / f"{self._count}.wav"  # fresh name: a stale file can never pass as output
        argv = self._argv({"text": req.text, "out": str(out), "speaker": req.speaker or "",
                           "lang": req.language, "id": req.utterance_id})
        prog = Path(self.argv[0]).name
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = proc.communicate(req.text.encode(), timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            raise TimeoutError(f"{prog} took over {self.timeout_s:g} s ({TIMEOUT_ENV}): {_tail(stderr)}") from None
        try:
            if proc.returncode != 0:
                raise RuntimeError(f"{prog} exited {proc.returncode}: {_tail(stderr)}")
            if not out.is_file():
                raise RuntimeError(f"{prog} exited 0 but wrote no {out.name} to {{out}}: {_tail(stderr)}")
            try:
                audio = read_wav(out, duration_cap(req.text))
            except EvalkitError as exc:
                raise RuntimeError(f"{prog} wrote an unreadable wav ({exc}): {_tail(stderr)}") from None
        finally:
            out.unlink(missing_ok=True)
        self._rates.add(audio.sample_rate)
        return audio

    def describe(self) -> dict[str, str]:
        h = hashlib.sha256(self.template.encode())
        h.update(f"\nexe {sha256_file(self.argv[0])}".encode())
        for arg in self.argv[1:]:
            if not PLACEHOLDER.search(arg) and os.path.isfile(arg):
                h.update(f"\n{arg} {sha256_file(arg)}".encode())
        return {
            "model": self.model,
            "model_sha256": h.hexdigest(),
            "executable": self.argv[0],
            "sample_rate": str(next(iter(self._rates))) if len(self._rates) == 1 else "variable",
            "timeout_s": f"{self.timeout_s:g}",
            "device": self.device,
            "adapter_version": self.version,
        }

    def close(self) -> None:
        self._tmp.cleanup()
