"""Suites: fixed, versioned sentence sets. Loading, validation, content digest.

A suite is a folder holding `suite.yaml`:

    name: ko-base            # required
    version: 1               # required; bump on any content change
    language: ko             # required; ISO 639-1, drives ASR and text normalization
    description: ...         # required
    utterances: utterances.jsonl   # required; path relative to the folder
    speakers:                # optional: a prompt clip per speaker name, for speaker similarity
      f1: speakers/f1.wav

and a JSONL file with one utterance per line:

    {"id": "ko-base-001", "text": "...", "tags": ["liaison"], "speaker": "f1", "reference": "refs/ko-base-001.wav"}

`id` and `text` are required; `tags`, `speaker` and `reference` (a wav path relative to the
folder) are optional; without `reference`, a file refs/<id>.wav is the utterance's reference.
`readings` is optional too: a list of whole-sentence spoken forms (at most READINGS_MAX, each
non-empty, at most READING_MAX_CHARS characters, numbers spelled out: no digits) that count as
correct besides those evalkit derives from the text (for Korean: evalkit.korean_readings, e.g.
"text": "3~4일 걸려요", "readings": ["삼 일에서 사 일 걸려요", "사나흘 걸려요"]).
An utterance whose `speaker` has a prompt under the header's `speakers:` is compared with that
prompt by metrics that accept one (spk_sim) when it has no reference of its own. The digest
covers the name, the language, every utterance's id, text, readings and speaker and the bytes of every
reference file: it changes whenever anything that affects a score changes, and not when tags or
the description are edited.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from importlib.resources import files
from pathlib import Path

from . import textnorm
from .cache import sha256_file
from .errors import EvalkitError, first_line
from .types import Suite, Utterance
from .untrusted import check_name, inside, load_yaml

HEADER_KEYS = ("name", "version", "language", "description", "utterances")
UTTERANCES_MAX_BYTES = 64 << 20  # ko-base is 30 KB
READINGS_MAX = 16  # a sentence with more standard readings than this is better split
READING_MAX_CHARS = 1000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def builtin_dir() -> Path:
    return Path(str(files("evalkit_suites")))


def builtin_names() -> list[str]:
    return sorted(p.parent.name for p in builtin_dir().glob("*/suite.yaml"))


def resolve(name_or_path: str) -> Path:
    """The folder of a built-in suite NAME, or of the suite at PATH (a folder or its suite.yaml)."""
    path = Path(name_or_path)
    if path.name == "suite.yaml" and path.is_file():
        return path.parent
    if (path / "suite.yaml").is_file():
        return path
    builtin = builtin_dir() / name_or_path
    if "/" not in name_or_path and (builtin / "suite.yaml").is_file():
        return builtin
    known = ", ".join(builtin_names()) or "none"
    raise EvalkitError(f"unknown suite {name_or_path!r}: not a built-in suite ({known}) nor a folder with suite.yaml")


def load(name_or_path: str) -> Suite:
    folder = resolve(name_or_path)
    header = _read_header(folder / "suite.yaml")
    utt_file = inside(folder, header["utterances"], f"{folder / 'suite.yaml'}: utterances file")
    utterances = _read_utterances(utt_file, folder, _speaker_prompts(header, folder / "suite.yaml"))
    digest = _digest(header, utterances)
    return Suite(
        name=str(header["name"]),
        version=str(header["version"]),
        language=str(header["language"]),
        description=" ".join(str(header["description"]).split()),
        utterances=tuple(utterances),
        digest=digest,
        source=str(folder),
    )


def _read_header(path: Path) -> dict:
    header = load_yaml(path)
    if not isinstance(header, dict):
        raise EvalkitError(f"{path}: the suite header must be a YAML mapping")
    missing = [k for k in HEADER_KEYS if header.get(k) in (None, "")]
    if missing:
        raise EvalkitError(f"{path}: missing header field(s): {', '.join(missing)}")
    # The name becomes a folder (evalkit-runs/<time>-<name>) and an experiment: a plain token only.
    check_name(header["name"], f"{path}: suite name")
    if str(header["language"]) not in textnorm.LANGUAGES:
        raise EvalkitError(f"{path}: language {header['language']!r} is not one evalkit can transcribe and "
                           f"normalize (an ISO 639-1 code Whisper knows, like 'ko' or 'en')")
    return header


def _speaker_prompts(header: dict, where: Path) -> dict[str, Path]:
    speakers = header.get("speakers") or {}
    if not isinstance(speakers, dict):
        raise EvalkitError(f"{where}: speakers must map a speaker name to a wav path")
    prompts = {}
    for name, rel in speakers.items():
        path = inside(where.parent, rel, f"{where}: speaker prompt")
        if not path.is_file():
            raise EvalkitError(f"{where}: speaker prompt {rel!r} for {name!r} not found")
        prompts[str(name)] = path
    return prompts


def _read_utterances(path: Path, folder: Path, prompts: dict[str, Path]) -> list[Utterance]:
    try:
        if path.stat().st_size > UTTERANCES_MAX_BYTES:
            raise EvalkitError(f"{path}: larger than {UTTERANCES_MAX_BYTES >> 20} MiB; split the suite")
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path}: cannot read utterances ({first_line(exc)})") from None
    seen: set[str] = set()
    out: list[Utterance] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise EvalkitError(f"{where}: each line must be a JSON object")
        uid, text = obj.get("id"), obj.get("text")
        if not isinstance(uid, str) or not _ID.match(uid):
            raise EvalkitError(f"{where}: id must be a string of letters, digits, '.', '_' or '-', got {uid!r}")
        if uid in seen:
            raise EvalkitError(f"{where}: duplicate utterance id {uid!r}")
        seen.add(uid)
        if not isinstance(text, str) or not text.strip():
            raise EvalkitError(f"{where}: utterance {uid!r} has empty text")
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise EvalkitError(f"{where}: tags must be a list of strings")
        for t in tags:  # a tag names MLflow metrics (cer/mean/tag/TAG) and report rows
            check_name(t, f"{where}: tag")
        reference = obj.get("reference")
        ref_path = None
        if reference is not None:
            ref_path = inside(folder, reference, f"{where}: reference audio")
            if not ref_path.is_file():
                raise EvalkitError(f"{where}: reference audio {reference!r} not found")
        elif (folder / "refs" / f"{uid}.wav").is_file():
            ref_path = inside(folder, f"refs/{uid}.wav", f"{where}: reference audio")
        speaker = obj.get("speaker")
        readings = _readings(obj.get("readings", []), where, uid)
        out.append(Utterance(
            id=uid,
            text=unicodedata.normalize("NFC", text.strip()),
            tags=tuple(tags),
            speaker=str(speaker) if speaker is not None else None,
            reference=ref_path,
            speaker_prompt=prompts.get(str(speaker)) if speaker is not None else None,
            readings=readings,
        ))
    if not out:
        raise EvalkitError(f"{path}: the suite has no utterances")
    return out


def _readings(value: object, where: str, uid: str) -> tuple[str, ...]:
    """An utterance's `readings`: a bounded list of non-empty spoken forms without digits."""
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise EvalkitError(f"{where}: readings of {uid!r} must be a list of strings")
    if len(value) > READINGS_MAX:
        raise EvalkitError(f"{where}: {uid!r} lists {len(value)} readings, at most {READINGS_MAX}")
    out = []
    for r in value:
        r = unicodedata.normalize("NFC", r.strip())
        if not r:
            raise EvalkitError(f"{where}: {uid!r} has an empty reading")
        if len(r) > READING_MAX_CHARS:
            raise EvalkitError(f"{where}: a reading of {uid!r} is longer than {READING_MAX_CHARS} characters")
        # A reading says how the sentence is spoken: digits would be read back by evalkit's own rules.
        if any(unicodedata.category(c) == "Nd" for c in r):
            raise EvalkitError(f"{where}: a reading of {uid!r} has digits ({r!r}); spell the numbers out")
        out.append(r)
    return tuple(dict.fromkeys(out))


def _digest(header: dict, utterances: list[Utterance]) -> str:
    h = hashlib.sha256()
    # Tags, description and version are left out on purpose: retagging must not make two runs
    # incomparable, only what changes a score (text, readings, speaker, reference, language) does.
    head = {k: str(header[k]) for k in ("name", "language")}
    h.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode())
    for u in utterances:
        ref = sha256_file(u.reference) if u.reference else None
        prompt = sha256_file(u.speaker_prompt) if u.speaker_prompt else None
        rec: dict[str, object] = {"id": u.id, "text": u.text, "speaker": u.speaker, "reference": ref}
        if prompt:  # only suites with prompts carry the key: older digests stay as they were
            rec["speaker_prompt"] = prompt
        if u.readings:  # likewise: the accepted readings change a score, so they are content
            rec["readings"] = list(u.readings)
        h.update(b"\n" + json.dumps(rec, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()
