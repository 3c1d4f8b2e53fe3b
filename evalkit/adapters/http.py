"""An OpenAI-compatible speech endpoint: MODEL is an `http://` or `https://` URL.

    http://127.0.0.1:8000                    -> POST http://127.0.0.1:8000/v1/audio/speech
    http://127.0.0.1:8000/v1                 -> POST http://127.0.0.1:8000/v1/audio/speech
    http://host/custom/audio/speech          -> used as is
    http://127.0.0.1:8000/v1?model=tts-1&voice=alloy&concurrency=4&timeout=60&retries=2&max_mb=100

Query parameters (all optional) override the environment: `model` (EVALKIT_HTTP_MODEL, default
tts-1), `voice` (EVALKIT_HTTP_VOICE, default alloy; an utterance's own speaker wins), `concurrency`
(requests in flight, default 4), `timeout` (seconds, default 60: a total deadline per request
attempt, covering connect, send, headers and the whole body, so a server that drips its answer
cannot hold a sentence longer than that), `retries` (default 2), `max_mb` (the largest answer
accepted, in MiB, default 100: a larger Content-Length is refused at once, and any body is read in
1 MiB pieces and dropped as soon as it passes the cap, announced or not). The API key comes only from
EVALKIT_HTTP_API_KEY (sent as a Bearer token), so it never lands in MODEL, in describe() or in the
results.

The body is {"model", "input", "voice", "response_format": "wav"}. Redirects are never followed:
a 3xx fails its sentence with the status and the Location, so the API key never goes to another
host. Connection errors, 5xx and 429 are retried with a short exponential backoff; 3xx, 4xx, the
deadline and the size cap are not (a bad request stays bad, a slow model stays slow). A batch
raises on its first failed request; the core then asks again one sentence at a time, and the
sentence that failed gets its remembered error back without a second request, so one slow sentence
costs one timeout, while its batch-mates are simply requested again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from http.client import HTTPConnection, HTTPException, HTTPSConnection, IncompleteRead
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from ..audio import duration_cap, read_wav
from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest

SUFFIX = "/audio/speech"
INTS = {"concurrency": 1, "retries": 0}  # name -> smallest allowed value
FLOATS = {"timeout": 0.001, "max_mb": 0.001}  # name -> smallest allowed value
KNOWN = ("model", "voice", "concurrency", "timeout", "retries", "max_mb")
CHUNK = 1 << 20  # bytes read at a time, so a body past the cap is dropped after at most this much more
DETAIL = 4096  # bytes of an error answer kept for its message


def _positive(name: str, raw: str, smallest: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= smallest:
        raise EvalkitError(f"{name}={raw!r} in the URL: give a number >= {smallest}")
    return value


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Deadline:
    """One request attempt's total time limit. A daemon timer shuts the attempt's socket down when
    it passes, so no read, however slow the server drips, outlives it; `stop()` ends the watch and
    says whether it had fired (then whatever the attempt read or raised is the deadline's doing)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._expired = self._stopped = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(self.end - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket) -> None:
        """The socket to cut at the deadline (cut at once if it already passed)."""
        with self._lock:
            self._sock = sock
            if self._expired:
                self._cut()
            else:
                sock.settimeout(self.remaining())  # a single read never waits past the deadline

    def _fire(self) -> None:
        with self._lock:
            if not self._stopped:
                self._expired = True
                self._cut()

    def _cut(self) -> None:
        if self._sock is not None:
            # socket.socket's own shutdown, also for an SSLSocket: SSLSocket.shutdown would drop its
            # SSL object under a read in progress. A blocked read then sees end of stream. OSError:
            # already closed, the attempt is over.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def stop(self) -> bool:
        with self._lock:
            self._stopped = True
            self._timer.cancel()
            return self._expired


class _Watched:
    """Mixin for http.client connections: the socket they open is watched by the attempt's deadline."""

    def __init__(self, *args, deadline: _Deadline | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._watched_connection  # an instance attribute in HTTPConnection

    def _watched_connection(self, *args, **kwargs) -> socket.socket:
        sock = socket.create_connection(*args, **kwargs)
        if self._deadline is not None:
            self._deadline.watch(sock)
        return sock


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    # HTTPSConnection's own attributes this reimplementation of connect() reads (typeshed leaves
    # private attributes out).
    _context: ssl.SSLContext
    _tunnel_host: str | None

    def connect(self) -> None:
        # HTTPSConnection.connect, with the handshake after the watch moved to the TLS socket
        # (wrapping detaches the plain one), so a dripped handshake ends at the deadline too.
        HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._tunnel_host or self.host,
                                              do_handshake_on_connect=False)
        if self._deadline is not None:
            self._deadline.watch(self.sock)
        self.sock.do_handshake()


class _Request(urllib.request.Request):
    """A request that carries its attempt's deadline to the handlers below."""

    evalkit_deadline: _Deadline | None = None


class _HTTPAnswer(Exception):
    """An HTTP error status, with the start of its body (`detail`) read and the answer closed."""

    def __init__(self, code: int, headers, detail: bytes) -> None:
        super().__init__(f"HTTP {code}")
        self.code, self.headers, self.detail = code, headers, detail


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_WatchedHTTPConnection, req, deadline=getattr(req, "evalkit_deadline", None))


class _HTTPSHandler(urllib.request.HTTPSHandler):
    # HTTPSHandler's own attributes, set by its __init__ (typeshed leaves private attributes out).
    _context: ssl.SSLContext | None
    _check_hostname: bool | None

    def https_open(self, req):
        return self.do_open(_WatchedHTTPSConnection, req, context=self._context,
                            check_hostname=self._check_hostname, deadline=getattr(req, "evalkit_deadline", None))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as the HTTPError it is: following it would send the API key elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HTTPAdapter:
    name = "http"
    version = "1"
    batch_size = 8
    priority = 42
    concurrency = 4
    timeout_s = 60.0
    retries = 2
    max_mb = 100.0
    backoff_s = 0.25

    @classmethod
    def claims(cls, model: str) -> bool:
        return model.lower().startswith(("http://", "https://"))

    def __init__(self, model: str, device: str = "cpu") -> None:
        parts = urlsplit(model)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise EvalkitError(f"{model!r} is not an http(s) URL like "
                               "http://127.0.0.1:8000/v1?model=tts-1&voice=alloy")
        if parts.username or parts.password:
            raise EvalkitError("put credentials in EVALKIT_HTTP_API_KEY, not in the URL (it is recorded with the "
                               "results)")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
        except ValueError as exc:
            raise EvalkitError(f"bad URL {model!r}: {exc}") from None
        unknown = set(params) - set(KNOWN)
        if unknown:
            raise EvalkitError(f"unknown URL parameter {sorted(unknown)[0]!r} (known: {', '.join(KNOWN)})")
        self.tts_model = params.get("model") or os.environ.get("EVALKIT_HTTP_MODEL") or "tts-1"
        self.voice = params.get("voice") or os.environ.get("EVALKIT_HTTP_VOICE") or "alloy"
        if "timeout" in params:
            self.timeout_s = _positive("timeout", params["timeout"], FLOATS["timeout"])
        if "max_mb" in params:
            self.max_mb = _positive("max_mb", params["max_mb"], FLOATS["max_mb"])
        for key, smallest in INTS.items():
            if key in params:
                setattr(self, key, int(_positive(key, params[key], smallest)))
        self.batch_size = max(self.batch_size, self.concurrency)
        path = parts.path.rstrip("/")
        path = path if path.endswith(SUFFIX) else (path or "/v1") + SUFFIX
        self.endpoint = urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))
        self.model = f"{self.endpoint}?model={self.tts_model}&voice={self.voice}"
        self.device = "remote"
        self._headers = {"Content-Type": "application/json", "Accept": "audio/wav"}
        if os.environ.get("EVALKIT_HTTP_API_KEY"):
            self._headers["Authorization"] = f"Bearer {os.environ['EVALKIT_HTTP_API_KEY']}"
        # A proxy from the environment cannot reach this machine's loopback: never route through one.
        local = parts.hostname == "localhost" or _is_loopback(parts.hostname)
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []),
                                                   _HTTPHandler(), _HTTPSHandler(), _NoRedirects())
        self._probe(parts.scheme.lower(), parts.hostname, port, local)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="evalkit-http")
        self._failed: dict[tuple, BaseException] = {}
        self._rates: set[int] = set()

    def _probe(self, scheme: str, host: str, port: int, local: bool) -> None:
        # A dead endpoint is a usage error worth one line now, not N identical per-sentence failures.
        if not local and urllib.request.getproxies().get(scheme) and not urllib.request.proxy_bypass(host):
            return  # only the proxy can tell whether the endpoint answers
        try:
            socket.create_connection((host, port), timeout=min(self.timeout_s, 5.0)).close()
        except OSError as exc:
            raise EvalkitError(f"cannot connect to {host}:{port} for {self.endpoint} ({exc.strerror or exc}); "
                               "is the server running?") from None

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        if len(requests) > 1:
            self._failed.clear()  # the one-by-one retry of the previous batch is over
        elif requests and self._key(requests[0]) in self._failed:
            raise self._failed.pop(self._key(requests[0]))
        futures = [self._pool.submit(self._one, req) for req in requests]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for req, fut in zip(requests, futures, strict=True):
            failure = fut.exception() if fut in done else None
            if failure is not None:
                for other in pending:
                    other.cancel()
                if len(requests) > 1:  # only a batch is retried alone by the core
                    self._failed[self._key(req)] = failure
                raise failure
        clips = [f.result() for f in futures]
        self._rates.update(c.sample_rate for c in clips)
        return clips

    def _key(self, req: SynthesisRequest) -> tuple:
        return (req.utterance_id, req.text, req.speaker)

    def _one(self, req: SynthesisRequest) -> Audio:
        body = json.dumps({"model": self.tts_model, "input": req.text, "voice": req.speaker or self.voice,
                           "response_format": "wav"}).encode()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            deadline = _Deadline(self.timeout_s)
            try:
                try:
                    data, content_type = self._fetch(body, deadline)
                except Exception:
                    if deadline.stop():  # the watchdog cut the socket: whatever broke, the deadline did it
                        raise TimeoutError from None
                    raise
                if deadline.stop():  # a body that ends with the connection reads as complete when cut
                    raise TimeoutError
                return self._decode(data, content_type, duration_cap(req.text))
            except _HTTPAnswer as exc:
                if 300 <= exc.code < 400:
                    where = exc.headers.get("Location") if exc.headers else None
                    where = " ".join(urljoin(self.endpoint, where).split())[:200] if where else "nowhere (no Location)"
                    raise RuntimeError(f"HTTP {exc.code} redirect to {where} not followed (evalkit never follows "
                                       "redirects, so the API key stays with the endpoint)") from None
                detail = " ".join(exc.detail.decode(errors="replace").split())[:200]
                if last or not (exc.code == 429 or exc.code >= 500):
                    raise RuntimeError(f"HTTP {exc.code} from {self.endpoint} after {attempt + 1} tries: "
                                       f"{detail}") from None
            except (TimeoutError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    raise TimeoutError(f"no answer from {self.endpoint} within {self.timeout_s:g} s (total deadline "
                                       "per request: connect, headers and body; URL parameter timeout=)") from None
                if last:
                    raise ConnectionError(f"{self.endpoint} unreachable after {attempt + 1} tries: {reason}") from None
            except (ConnectionError, HTTPException) as exc:
                if last:
                    raise ConnectionError(f"{self.endpoint} broke the connection after {attempt + 1} tries: "
                                          f"{exc!r}") from None
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _fetch(self, body: bytes, deadline: _Deadline) -> tuple[bytes, str]:
        """One attempt, under `deadline`: the answer's bytes (at most max_mb) and its Content-Type."""
        request = _Request(self.endpoint, data=body, headers=self._headers, method="POST")
        request.evalkit_deadline = deadline
        try:
            with self._opener.open(request, timeout=deadline.remaining()) as resp:
                return self._read_capped(resp), resp.headers.get("Content-Type", "?")
        except urllib.error.HTTPError as exc:
            detail = b""
            try:  # the start of the error answer, for the message: never all of it
                if not 300 <= exc.code < 400:
                    detail = exc.read(DETAIL)
            except (OSError, HTTPException, ValueError):
                pass
            finally:
                exc.close()
            raise _HTTPAnswer(exc.code, exc.headers, detail) from None

    def _read_capped(self, resp) -> bytes:
        cap = int(self.max_mb * (1 << 20))
        too_large = RuntimeError(f"answer larger than {self.max_mb:g} MiB (URL parameter max_mb=)")
        if resp.length is not None and resp.length > cap:
            raise too_large  # announced: refused before reading any of it
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = resp.read(min(CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise too_large
        data = b"".join(chunks)
        if resp.length:  # read(n) takes an early end of stream quietly; a short body is a broken one
            raise IncompleteRead(data, resp.length)
        return data

    def _decode(self, data: bytes, content_type: str, max_seconds: float) -> Audio:
        try:  # the length comes from the header: a clip longer than the text allows is not decoded
            return read_wav(io.BytesIO(data), max_seconds)
        except EvalkitError as exc:
            raise RuntimeError(f"answer is not a usable wav ({content_type}, {len(data)} bytes: "
                               f"{data[:60]!r}): {exc}") from None

    def describe(self) -> dict[str, str]:
        return {
            "model": self.model,
            "model_sha256": hashlib.sha256(self.model.encode()).hexdigest(),
            "endpoint": self.endpoint,
            "tts_model": self.tts_model,
            "voice": self.voice,
            "sample_rate": str(next(iter(self._rates))) if len(self._rates) == 1 else "variable",
            "concurrency": str(self.concurrency),
            "timeout_s": f"{self.timeout_s:g}",
            "retries": str(self.retries),
            "max_mb": f"{self.max_mb:g}",
            "device": self.device,
            "adapter_version": self.version,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
