"""An OpenAI-compatible speech endpoint: MODEL is an `http://` or `https://` URL.

    http://127.0.0.1:8000                    -> POST http://127.0.0.1:8000/v1/audio/speech
    http://127.0.0.1:8000/v1                 -> POST http://127.0.0.1:8000/v1/audio/speech
    http://host/custom/audio/speech          -> used as is
    http://127.0.0.1:8000/v1?model=tts-1&voice=alloy&concurrency=4&timeout=60&retries=2

Query parameters (all optional) override the environment: `model` (EVALKIT_HTTP_MODEL, default
tts-1), `voice` (EVALKIT_HTTP_VOICE, default alloy; an utterance's own speaker wins), `concurrency`
(requests in flight, default 4), `timeout` (seconds a socket may wait, default 60), `retries`
(default 2). The API key comes only from EVALKIT_HTTP_API_KEY (sent as a Bearer token), so it never
lands in MODEL, in describe() or in the results.

The body is {"model", "input", "voice", "response_format": "wav"}. Connection errors, 5xx and 429
are retried with a short exponential backoff; 4xx and timeouts are not (a bad request stays bad, a
slow model stays slow). A batch raises on its first failed request; the core then asks again one
sentence at a time, and the sentence that failed gets its remembered error back without a second
request, so one slow sentence costs one timeout, while its batch-mates are simply requested again.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from http.client import HTTPException
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np
import soundfile as sf

from ..errors import EvalkitError
from ..types import Audio, SynthesisRequest

SUFFIX = "/audio/speech"
INTS = {"concurrency": 1, "retries": 0}  # name -> smallest allowed value


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


class HTTPAdapter:
    name = "http"
    version = "1"
    batch_size = 8
    priority = 42
    concurrency = 4
    timeout_s = 60.0
    retries = 2
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
            raise EvalkitError("put credentials in EVALKIT_HTTP_API_KEY, not in the URL (it is recorded with the results)")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
        except ValueError as exc:
            raise EvalkitError(f"bad URL {model!r}: {exc}") from None
        unknown = set(params) - {"model", "voice", "timeout", *INTS}
        if unknown:
            raise EvalkitError(f"unknown URL parameter {sorted(unknown)[0]!r} "
                               "(known: model, voice, concurrency, timeout, retries)")
        self.tts_model = params.get("model") or os.environ.get("EVALKIT_HTTP_MODEL") or "tts-1"
        self.voice = params.get("voice") or os.environ.get("EVALKIT_HTTP_VOICE") or "alloy"
        if "timeout" in params:
            self.timeout_s = _positive("timeout", params["timeout"], 0.001)
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
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []))
        self._probe(parts.scheme.lower(), parts.hostname, port, local)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="evalkit-http")
        self._failed: dict[tuple, Exception] = {}
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
        for req, fut in zip(requests, futures):
            if fut in done and fut.exception() is not None:
                for other in pending:
                    other.cancel()
                if len(requests) > 1:  # only a batch is retried alone by the core
                    self._failed[self._key(req)] = fut.exception()
                raise fut.exception()
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
            try:
                request = urllib.request.Request(self.endpoint, data=body, headers=self._headers, method="POST")
                with self._opener.open(request, timeout=self.timeout_s) as resp:
                    return self._decode(resp.read(), resp.headers.get("Content-Type", "?"))
            except urllib.error.HTTPError as exc:
                detail = " ".join(exc.read().decode(errors="replace").split())[:200]
                if last or not (exc.code == 429 or exc.code >= 500):
                    raise RuntimeError(f"HTTP {exc.code} from {self.endpoint} after {attempt + 1} tries: {detail}") from None
            except (TimeoutError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    raise TimeoutError(f"no answer from {self.endpoint} within {self.timeout_s:g} s "
                                       "(URL parameter timeout=)") from None
                if last:
                    raise ConnectionError(f"{self.endpoint} unreachable after {attempt + 1} tries: {reason}") from None
            except (ConnectionError, HTTPException) as exc:
                if last:
                    raise ConnectionError(f"{self.endpoint} broke the connection after {attempt + 1} tries: "
                                          f"{exc!r}") from None
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _decode(self, data: bytes, content_type: str) -> Audio:
        try:
            samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise RuntimeError(f"answer is not a readable wav ({content_type}, {len(data)} bytes: "
                               f"{data[:60]!r}): {exc}") from None
        return Audio(np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32), int(rate))

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
            "device": self.device,
            "adapter_version": self.version,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
