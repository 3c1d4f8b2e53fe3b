"""The http adapter against misbehaving endpoints (Hardening II), on the real command in a fresh
process: a redirect to another server, an endless body, a body or headers dripped a byte at a time.

Each server here binds 127.0.0.1 only and answers the suite's first sentence with a real espeak
wav, so every run has one utterance that succeeds (a stage failing on every utterance is a run
failure of its own); the second sentence gets the misbehaviour. Every loop in the servers is
bounded in count and time, and stops at teardown. Nothing here asserts wall-clock time: the
properties are the recorded failure reasons, the requests each server saw and the bytes it got to
send before the client hung up.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from evalkit import suite as suite_mod
from evalkit.types import SynthesisRequest

pytestmark = pytest.mark.slow  # every test runs the whole command against a misbehaving server

# No reference audio in en-base: `stoi` is then skipped with a note on every utterance, so these
# runs exercise the whole command (synthesis, record, MLflow) without loading Whisper.
LIGHT = ("--metrics", "stoi", "--workers", "0")
KEY = "sk-hardening-secret-42"
MiB = 1 << 20
BIG = 128 * MiB  # what the endless bodies would send in all; the client must stop far earlier
DRIP_S, DRIP_MAX = 0.2, 300  # one byte per 0.2 s, at most 300 of them (60 s)


def first_two() -> tuple[str, str]:
    utterances = suite_mod.load("en-base").utterances
    return utterances[0].text, utterances[1].text


class Endpoint:
    """A speech endpoint whose answer to every text but `good` is `mode`."""

    def __init__(self, wav: bytes, good: str, mode: str, location: str = "") -> None:
        self.wav, self.good, self.mode, self.location = wav, good, mode, location
        self.lock = threading.Lock()
        self.connections = 0  # TCP connections accepted, request or not
        self.requests: list[tuple[str, str | None]] = []  # (method, Authorization) of every request
        self.calls: Counter = Counter()  # POSTs per input text
        self.sent: Counter = Counter()  # body (or header) bytes the misbehaving answers got out
        self.ended: list[str] = []  # how each misbehaving answer ended: "client left" or "bound"
        self.stop_event = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a client that stalls without leaving cannot block a server thread for long

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with server.lock:
                    server.connections += 1

            def parse_request(self):
                ok = super().parse_request()
                if ok:  # any method: a followed 302 comes back as a GET
                    with server.lock:
                        server.requests.append((self.command, self.headers.get("Authorization")))
                return ok

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                text = json.loads(self.rfile.read(min(length, 1 << 16)) or b"{}").get("input", "")
                with server.lock:
                    server.calls[text] += 1
                self.close_connection = True
                if text == server.good:
                    return self.answer(200, server.wav, "audio/wav")
                try:
                    getattr(self, "mode_" + server.mode.replace("-", "_"))()
                    ended = "bound"
                except OSError:
                    ended = "client left"
                with server.lock:
                    server.ended.append(ended)

            def answer(self, code, data, ctype, **headers):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def count(self, n):
                with server.lock:
                    server.sent["bad"] += n

            def mode_redirect_302(self):
                self.answer(302, b"moved", "text/plain", Location=server.location)

            def mode_redirect_307(self):
                self.answer(307, b"moved", "text/plain", Location=server.location)

            def stream(self, framing):
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                if framing == "content-length":
                    self.send_header("Content-Length", str(BIG))
                elif framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")  # "close": the body ends when the connection does
                self.end_headers()
                block = b"\0" * (64 << 10)
                for _ in range(BIG // len(block)):
                    if server.stop_event.is_set():
                        return
                    if framing == "chunked":
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    else:
                        self.wfile.write(block)
                    self.count(len(block))

            def mode_huge_content_length(self):
                self.stream("content-length")

            def mode_huge_close(self):
                self.stream("close")

            def mode_huge_chunked(self):
                self.stream("chunked")

            def drip(self):
                for _ in range(DRIP_MAX):
                    if server.stop_event.wait(DRIP_S):
                        return
                    self.wfile.write(b"x")
                    self.count(1)

            def mode_drip_body(self):
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(DRIP_MAX + 1000))  # never all of it
                self.send_header("Connection", "close")
                self.end_headers()
                self.drip()

            def mode_drip_headers(self):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")  # a header line that never ends
                self.drip()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def good_wav(espeak_en) -> bytes:
    clip = espeak_en.synthesize([SynthesisRequest("x", first_two()[0], "en")])[0]
    buf = io.BytesIO()
    sf.write(buf, clip.samples, clip.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
def endpoints(good_wav):
    """Makes Endpoints, and shuts every one down after the test, whatever happened."""
    made: list[Endpoint] = []

    def make(mode: str, location: str = "") -> Endpoint:
        made.append(Endpoint(good_wav, first_two()[0], mode, location))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()


def run(url: str, out: Path, sqlite_uri: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-m", "evalkit", "run", "--suite", "en-base", url, "--limit", "2", *LIGHT,
                           "--out", str(out), "--tracking-uri", sqlite_uri], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "EVALKIT_HTTP_API_KEY": KEY})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr  # per-utterance failures are recorded, not fatal
    rows = {r["id"]: r for r in map(json.loads, (out / "utterances.jsonl").read_text().splitlines())}
    assert rows["en-base-001"]["failure"] is None, rows  # the good sentence came through
    return proc, rows


def how_it_ended(endpoint: Endpoint) -> list[str]:
    """The misbehaving answers' ends; a server thread notices a client that left at its next write."""
    deadline = time.monotonic() + 30
    while not endpoint.ended and time.monotonic() < deadline:
        time.sleep(0.05)
    return endpoint.ended


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_to_another_host_is_not_followed_and_the_key_stays(code, endpoints, tmp_path, sqlite_uri):
    elsewhere = endpoints("drip-body")  # must never be asked anything
    target = elsewhere.url + "/v1/audio/speech"
    endpoint = endpoints(f"redirect-{code}", location=target)
    proc, rows = run(endpoint.url + "/v1", tmp_path / "run", sqlite_uri)
    # Not one connection to the other server, so no request and no Authorization header there.
    assert (elsewhere.connections, elsewhere.requests) == (0, []), elsewhere.requests
    failure = rows["en-base-002"]["failure"]
    assert f"HTTP {code} redirect to {target} not followed" in failure, failure
    assert "never follows redirects" in failure and "\n" not in failure
    assert endpoint.calls[first_two()[1]] == 1  # a 3xx is not retried
    # The key was in play, and went only to the endpoint, with every request.
    assert {auth for _, auth in endpoint.requests} == {f"Bearer {KEY}"}
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".txt", ".md"):
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in proc.stdout + proc.stderr


@pytest.mark.parametrize("framing", ["content-length", "close", "chunked"])
def test_an_endless_body_is_cut_at_max_mb(framing, endpoints, tmp_path, sqlite_uri):
    endpoint = endpoints(f"huge-{framing}")
    _, rows = run(endpoint.url + "/v1?max_mb=1", tmp_path / "run", sqlite_uri)
    failure = rows["en-base-002"]["failure"]
    assert "answer larger than 1 MiB (URL parameter max_mb=)" in failure, failure
    assert endpoint.calls[first_two()[1]] == 1  # not retried
    # The client hung up early: the server got out at most what it read (1 MiB and a piece) plus
    # what the loopback socket buffers hold, far from the 128 MiB it had to send.
    assert how_it_ended(endpoint) == ["client left"]
    assert endpoint.sent["bad"] < 48 * MiB, endpoint.sent


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_dripped_answer_ends_at_the_total_deadline(where, endpoints, tmp_path, sqlite_uri):
    endpoint = endpoints(f"drip-{where}")
    _, rows = run(endpoint.url + "/v1?timeout=1", tmp_path / "run", sqlite_uri)
    failure = rows["en-base-002"]["failure"]
    assert "within 1 s (total deadline" in failure and "URL parameter timeout=" in failure, failure
    assert endpoint.calls[first_two()[1]] == 1  # a deadline is not retried
    # Each byte came well within any per-read timeout, yet the client left before the server's
    # 300-byte bound: the deadline is on the whole answer, not on each read.
    assert how_it_ended(endpoint) == ["client left"]
    assert 0 < endpoint.sent["bad"] < DRIP_MAX, endpoint.sent
