"""The http adapter against a real OpenAI-style speech server on 127.0.0.1 that speaks with Piper.

The server's behaviour is chosen by the input text: "slow ..." answers after the client gave up,
"flaky ..." fails twice with 500 then answers, "bad ..." is a 400. It counts calls per text and
the most requests it ever had in flight.
"""

import hashlib
import io
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from evalkit import pipeline
from evalkit.adapters.http import HTTPAdapter
from evalkit.errors import EvalkitError
from evalkit.types import Suite, SynthesisRequest, Utterance

TEXTS = ["Hello there.", "Good night.", "See you soon.", "One more.", "Thank you.", "Yes.", "No.", "Maybe later."]


class SpeechServer:
    def __init__(self, piper):
        self.piper = piper
        self.synth_lock = threading.Lock()  # Piper's phonemizer is not thread-safe
        self.cache: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.calls: Counter = Counter()
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.active = self.max_active = 0
        self.hold_s = 0.0  # extra time each answer takes, to make requests overlap
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["input"]
                with server.lock:
                    server.calls[text] += 1
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    n = server.calls[text]
                self.counted = True
                try:
                    self.answer(text, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
                finally:
                    self.uncount()

            def uncount(self):
                # Before the body goes out: once the client has it, it may send its next request
                # before this thread runs again, which would count one request too many.
                with server.lock:
                    if self.counted:
                        server.active -= 1
                        self.counted = False

            def answer(self, text, n):
                if self.path != "/v1/audio/speech":
                    return self.send(404, b'{"error": "not found"}', "application/json")
                if text.startswith("slow"):
                    server.release.wait(5)
                if text.startswith("flaky") and n <= 2:
                    return self.send(500, b'{"error": "overloaded"}', "application/json")
                if text.startswith("bad"):
                    return self.send(400, b'{"error": {"message": "input contains forbidden words"}}',
                                     "application/json")
                time.sleep(server.hold_s)
                self.send(200, server.wav(text), "audio/wav")

            def send(self, code, data, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.uncount()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wav(self, text: str) -> bytes:
        with self.synth_lock:
            if text not in self.cache:
                clip = self.piper.synthesize([SynthesisRequest("x", text, "en")])[0]
                buf = io.BytesIO()
                sf.write(buf, clip.samples, clip.sample_rate, format="WAV", subtype="FLOAT")
                self.cache[text] = buf.getvalue()
            return self.cache[text]

    def reset(self):
        self.release.set()  # let a request an earlier test gave up on finish, so it is not counted
        deadline = time.time() + 10
        while self.active and time.time() < deadline:
            time.sleep(0.01)
        self.release.clear()
        with self.lock:
            self.calls.clear()
            self.bodies.clear()
            self.auth.clear()
            self.max_active = 0
        self.hold_s = 0.0

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(piper):
    srv = SpeechServer(piper)
    yield srv
    srv.stop()


@pytest.fixture
def fresh(server):
    server.reset()
    return server


def req(text: str, uid: str = "u") -> SynthesisRequest:
    return SynthesisRequest(uid, text, "en")


def test_audio_is_pipers_sample_for_sample(fresh, piper, monkeypatch):
    monkeypatch.setenv("EVALKIT_HTTP_API_KEY", "sk-test-123")
    adapter = HTTPAdapter(fresh.url + "/v1?model=joe&voice=joe-medium")
    clips = adapter.synthesize([req(t, f"u{i}") for i, t in enumerate(TEXTS[:3])])
    for text, clip in zip(TEXTS[:3], clips, strict=True):
        direct = piper.synthesize([req(text)])[0]
        assert clip.sample_rate == direct.sample_rate == 22050 and clip.samples.dtype == np.float32
        np.testing.assert_array_equal(clip.samples, direct.samples)
    assert sorted(fresh.bodies, key=lambda b: b["input"])[0] == {
        "model": "joe", "input": "Good night.", "voice": "joe-medium", "response_format": "wav"}
    assert fresh.auth == ["Bearer sk-test-123"] * 3
    info = adapter.describe()
    assert info["model"] == f"{fresh.url}/v1/audio/speech?model=joe&voice=joe-medium"
    assert info["model_sha256"] == hashlib.sha256(info["model"].encode()).hexdigest()
    assert info["sample_rate"] == "22050" and "sk-test" not in json.dumps(info)
    assert (info["timeout_s"], info["max_mb"], info["retries"]) == ("60", "100", "2")  # the documented defaults
    adapter.close()


def test_speaker_overrides_voice(fresh):
    adapter = HTTPAdapter(fresh.url)
    adapter.synthesize([SynthesisRequest("u", "Yes.", "en", speaker="nova")])
    assert fresh.bodies[0]["voice"] == "nova" and fresh.bodies[0]["model"] == "tts-1"
    adapter.close()


def test_timeout_fails_only_that_sentence_through_the_core(fresh, tmp_path):
    adapter = HTTPAdapter(fresh.url + "/v1?timeout=1")
    texts = ["Hello there.", "slow sentence", "Good night."]
    suite = Suite("t", "1", "en", "test", tuple(Utterance(f"u{i}", t) for i, t in enumerate(texts)), "d", "mem")
    rows = pipeline.evaluate(suite, adapter, None, [], tmp_path).rows
    assert "within 1 s (total deadline" in rows[1].failure and "timeout=" in rows[1].failure
    assert rows[0].failure is None and rows[2].failure is None
    assert (tmp_path / rows[2].audio_path).is_file()
    # One slow sentence costs one timeout: the deadline is not retried, and the core's one-by-one
    # retry reuses the recorded timeout; its batch-mates are asked at most twice (batch, then alone).
    assert fresh.calls["slow sentence"] == 1
    assert 1 <= fresh.calls["Hello there."] <= 2 and 1 <= fresh.calls["Good night."] <= 2
    adapter.close()


def test_5xx_is_retried_4xx_is_not(fresh, tmp_path):
    adapter = HTTPAdapter(fresh.url + "/v1")
    adapter.backoff_s = 0.05
    assert adapter.synthesize([req("flaky but fine")])[0].duration > 0.3
    assert fresh.calls["flaky but fine"] == 3
    suite = Suite("t", "1", "en", "test", (Utterance("a", "Thank you."), Utterance("b", "bad words")), "d", "mem")
    rows = pipeline.evaluate(suite, adapter, None, [], tmp_path).rows
    assert rows[0].failure is None
    assert "HTTP 400" in rows[1].failure and "forbidden words" in rows[1].failure
    assert fresh.calls["bad words"] == 1
    adapter.close()


def test_concurrency_never_exceeds_the_limit(fresh):
    fresh.hold_s = 0.2
    adapter = HTTPAdapter(fresh.url + "/v1?concurrency=3")
    assert adapter.batch_size == 8
    clips = adapter.synthesize([req(t, f"u{i}") for i, t in enumerate(TEXTS)])
    assert len(clips) == 8 and all(c.duration > 0.2 for c in clips)
    assert fresh.max_active == 3  # reached, never passed
    adapter.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_fails_fast(piper):
    port = _closed_port()
    # At construction, from the one probe connection: a usage error naming the address, before
    # any sentence is sent.
    with pytest.raises(EvalkitError, match=f"cannot connect to 127.0.0.1:{port} .*is the server running"):
        HTTPAdapter(f"http://127.0.0.1:{port}/v1")
    gone = SpeechServer(piper)  # a server that dies mid-run: each sentence fails after its retries
    adapter = HTTPAdapter(gone.url)
    gone.stop()
    with pytest.raises(ConnectionError, match="unreachable after 3 tries"):  # retries=2 by default
        adapter.synthesize([req("Hello there.")])
    assert sum(gone.calls.values()) == 0
    adapter.close()


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/audio/speech"])
def test_endpoint_forms(server, suffix):
    adapter = HTTPAdapter(server.url + suffix)
    assert adapter.endpoint == server.url + "/v1/audio/speech"
    adapter.close()


@pytest.mark.parametrize("query, message", [
    ("?modle=x", "unknown URL parameter 'modle'"),
    ("?concurrency=0", "concurrency="),
    ("?timeout=fast", "timeout="),
    ("?retries=-1", "retries="),
    ("?max_mb=0", "max_mb="),
    ("?max_mb=lots", "max_mb="),
    ("?maxmb=1", r"unknown URL parameter 'maxmb' \(known: .*max_mb\)"),
])
def test_bad_urls_are_usage_errors(server, query, message):
    with pytest.raises(EvalkitError, match=message):
        HTTPAdapter(server.url + "/v1" + query)


def test_credentials_in_url_are_refused(server):
    with pytest.raises(EvalkitError, match="EVALKIT_HTTP_API_KEY"):
        HTTPAdapter(server.url.replace("http://", "http://user:secret@"))


def test_claims_and_resolution(server):
    from evalkit.adapters import resolve

    assert HTTPAdapter.claims("http://127.0.0.1:8000/v1") and HTTPAdapter.claims("HTTPS://api.example.com/v1")
    assert not HTTPAdapter.claims("piper:joe") and not HTTPAdapter.claims("cmd:curl {out}")
    # Among all installed adapters, in their resolution order, a URL goes to this one.
    adapter = resolve(server.url + "/v1?voice=joe")
    try:
        assert type(adapter) is HTTPAdapter and adapter.endpoint == server.url + "/v1/audio/speech"
    finally:
        adapter.close()
