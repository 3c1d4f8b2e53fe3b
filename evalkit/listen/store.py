"""Every rating of a listening test, in one sqlite file.

Tables:
    meta(key, value)        schema version, the secret behind every opaque id and form token,
                            the digest and description of the test this file belongs to
    submissions(token, rater, item, at)
                            one row per submitted form: the token is the primary key (a replayed
                            form is refused) and (rater, item) is unique (an item is rated once)
    ratings(id, token, rater, item, test, repeat_of, run, system_kind, utterance_id, score, at)
                            one row per rating: a MOS form gives one, an A/B form two (each run's
                            share of the preference), a MUSHRA form one per system

Why nothing is lost: the file is in WAL mode with synchronous=FULL, every request opens its own
connection, and a submission is one `BEGIN IMMEDIATE` transaction (its submission row and all its
rating rows, or nothing). Two raters submitting at once, from two threads of the server or from
two server processes on one file, are serialized by sqlite's write lock (waiting up to
BUSY_TIMEOUT_S); a killed or restarted server leaves every committed rating in the file, and
ratings are read back from the file on every request, so a rater resumes where the file says.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import EvalkitError, first_line

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 30.0
Outcome = Literal["saved", "replayed", "already-rated"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    token TEXT PRIMARY KEY,
    rater TEXT NOT NULL,
    item TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (rater, item)
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token TEXT NOT NULL REFERENCES submissions (token),
    rater TEXT NOT NULL,
    item TEXT NOT NULL,
    test TEXT NOT NULL,
    repeat_of TEXT,
    run TEXT NOT NULL,
    system_kind TEXT NOT NULL,
    utterance_id TEXT NOT NULL,
    score REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ratings_by_rater ON ratings (rater);
"""


@dataclass(frozen=True)
class Score:
    """One value of a submitted form, already mapped from its slot to the system it rates."""

    run: str  # the system key: a run's evalkit run id, or an anchor's name
    system_kind: str  # run | reference | degraded
    utterance_id: str
    score: float


@dataclass(frozen=True)
class Submission:
    token: str
    rater: str
    item: str
    test: str
    repeat_of: str | None  # the item an attention repeat must agree with
    scores: tuple[Score, ...]


@dataclass(frozen=True)
class Rating:
    """One stored row of `ratings`."""

    token: str
    rater: str
    item: str
    test: str
    repeat_of: str | None
    run: str
    system_kind: str
    utterance_id: str
    score: float
    at: float  # unix seconds


class Store:
    """A listening-test database; created (schema, WAL, secret) on first open."""

    def __init__(self, path: Path, create: bool = True):
        if not create and not path.is_file():
            raise EvalkitError(f"{path}: no listening-test database there (start the test first: "
                               "evalkit listen RUN...)")
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise EvalkitError(f"{path}: sqlite cannot use WAL mode there (got {mode}); "
                                       "put --db on a local disk")
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                # One secret per database, made once: ids and tokens stay valid across restarts.
                db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise EvalkitError(f"{path}: not a usable listening-test database ({first_line(exc)})") from None
        if meta.get("schema") != SCHEMA_VERSION:
            raise EvalkitError(f"{path}: listening-test database of schema {meta.get('schema')!r}; "
                               f"this evalkit reads schema {SCHEMA_VERSION}")
        self.secret: str = meta["secret"]

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: safe from any thread or process; autocommit mode, so every
        # transaction here is explicit.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when submit() returns
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    # --- which test this file holds ----------------------------------------------------------

    def claim(self, digest: str, description: dict) -> None:
        """Binds the file to the test `digest` names, or refuses a file made for another test:
        the orders its raters follow, and what its ratings mean, belong to that test."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                held = db.execute("SELECT value FROM meta WHERE key = 'digest'").fetchone()
                if held is None:
                    db.execute("INSERT INTO meta VALUES ('digest', ?)", (digest,))
                    db.execute("INSERT INTO meta VALUES ('test', ?)", (json.dumps(description),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if held is not None and held[0] != digest:
            test = self.description() or {}
            raise EvalkitError(f"{self.path} holds another listening test ({test.get('test')} over "
                               f"{len(test.get('systems', []))} systems and {len(test.get('utterances', []))} "
                               "utterances, or another seed): pass another --db, or the same runs and options")

    def description(self) -> dict | None:
        """The test this file was made for (catalog.Selection.describe), None before any claim."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'test'").fetchone()
        return json.loads(row[0]) if row else None

    # --- ratings ----------------------------------------------------------------------------

    def submit(self, sub: Submission, at: float | None = None) -> Outcome:
        """Stores one form atomically. A token seen before is `replayed`, a second form for an item
        the rater already rated `already-rated`; neither changes anything."""
        at = time.time() if at is None else at
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                try:
                    db.execute("INSERT INTO submissions VALUES (?, ?, ?, ?)", (sub.token, sub.rater, sub.item, at))
                except sqlite3.IntegrityError:
                    db.execute("ROLLBACK")
                    seen = db.execute("SELECT 1 FROM submissions WHERE token = ?", (sub.token,)).fetchone()
                    return "replayed" if seen else "already-rated"
                db.executemany(
                    "INSERT INTO ratings (token, rater, item, test, repeat_of, run, system_kind, utterance_id, "
                    "score, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(sub.token, sub.rater, sub.item, sub.test, sub.repeat_of, s.run, s.system_kind, s.utterance_id,
                      float(s.score), at) for s in sub.scores])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return "saved"

    def rated(self, rater: str) -> set[str]:
        """The items `rater` has submitted."""
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT item FROM submissions WHERE rater = ?", (rater,))}

    def ratings(self) -> list[Rating]:
        """Every rating row, in the order they were stored."""
        with self._connect() as db:
            rows = db.execute("SELECT token, rater, item, test, repeat_of, run, system_kind, utterance_id, score, at "
                              "FROM ratings ORDER BY id").fetchall()
        return [Rating(*r) for r in rows]

    def raters(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT rater FROM submissions ORDER BY rater")]


# --- form tokens ------------------------------------------------------------------------------


def issue_token(secret: str, rater: str, item: str) -> str:
    """A token for one rendering of an item's form: a random nonce and its MAC over (rater, item),
    so a token is valid for that rater and item only, also after a server restart."""
    nonce = secrets.token_hex(8)
    return f"{nonce}.{_mac(secret, rater, item, nonce)}"


def token_ok(secret: str, rater: str, item: str, token: str) -> bool:
    nonce, sep, mac = token.partition(".")
    return bool(sep) and len(nonce) == 16 and hmac.compare_digest(mac, _mac(secret, rater, item, nonce))


def _mac(secret: str, rater: str, item: str, nonce: str) -> str:
    return hmac.new(secret.encode(), "\0".join(("token", rater, item, nonce)).encode(),
                    hashlib.sha256).hexdigest()[:24]
