"""Whisper models by name (`--asr faster-whisper:NAME`, `openai-whisper:NAME`): resolved from the
standard caches without network, downloaded only when allowed, and every way that goes wrong
one line. The caches are built in tmp from the bundled base weights, so a name resolves to
weights whose digest is known; no test here transcribes."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest
from conftest import run_in_process

from evalkit.asr import ALLOW_DOWNLOAD_ENV, download_allowed
from evalkit.asr import faster_whisper as fw
from evalkit.asr.faster_whisper import FasterWhisperASR, bundled_base, ct2_model_sha256
from evalkit.errors import EvalkitError

REV = "0123456789abcdef0123456789abcdef01234567"
BRIEF_NAMES = ("tiny tiny.en base base.en small small.en medium medium.en large-v1 large-v2 large-v3 large-v3-turbo "
               "turbo distil-large-v2 distil-large-v3 distil-medium.en distil-small.en").split()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    root = tmp_path / "hf-hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)
    return root


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def put_in_hub(root: Path, repo: str, source: Path, *, model_bin: bytes | None = None) -> Path:
    """`source`'s files laid out as huggingface_hub caches them: blobs named by content (model.bin,
    an LFS file, by its sha256), snapshots/REV/* linking to them, refs/main naming REV. The
    bundled model.bin is linked, not copied, unless `model_bin` gives other bytes."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / REV
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REV)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        data = (source / name).read_bytes()
        blob = blobs / hashlib.sha1(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    blob = blobs / ct2_model_sha256(source)  # what the hub calls an intact model.bin
    if model_bin is None:
        blob.symlink_to(source / "model.bin")
    else:
        blob.write_bytes(model_bin)
    (snapshot / "model.bin").symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def run_args(tmp_path: Path, uri: str, asr: str) -> list[str]:
    return ["run", "--suite", "en-base", "espeak:en-us", "--limit", "1", "--metrics", "intelligibility",
            "--workers", "0", "--asr", asr, "--out", str(tmp_path / "run"), "--tracking-uri", uri]


def offline_for_real() -> bool:
    """No name resolution: a download attempt fails where it would otherwise fetch gigabytes."""
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return True
    return False


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers: a network that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server():
    server = socketserver.TCPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# --- faster-whisper -------------------------------------------------------------------------


def test_names_are_faster_whispers_own():
    from faster_whisper.utils import _MODELS

    assert fw.known_models() == _MODELS
    assert set(BRIEF_NAMES) <= set(fw.known_models())
    assert fw._FALLBACK_REPOS.items() <= _MODELS.items()  # the fallback says what faster-whisper says


def test_a_name_resolves_from_the_hub_cache_without_network(hub_cache, no_network, asr):
    snapshot = put_in_hub(hub_cache, "Systran/faster-whisper-small", bundled_base())
    small = FasterWhisperASR("small", "cpu")
    assert small.folder == snapshot
    info, base = small.describe(), asr.describe()
    assert info["model"] == "small" and info["source"] == f"huggingface:Systran/faster-whisper-small@{REV}"
    # The digest is computed from the file loaded: the bundled bytes, so the same settings digest
    # as base (same weights, same decoding): transcripts from either are comparable.
    assert info["model_sha256"] == ct2_model_sha256(bundled_base()) == base["model_sha256"]
    assert info["settings_digest"] == base["settings_digest"]
    assert "ko" in small.languages
    assert small.model.model.is_multilingual  # and faster-whisper loads it from there, offline


def test_base_stays_the_bundled_copy_when_the_hub_has_one(hub_cache, asr):
    put_in_hub(hub_cache, "Systran/faster-whisper-base", bundled_base())
    again = FasterWhisperASR("base", "cpu")
    assert again.folder == bundled_base() and again.describe() == asr.describe()  # provenance unchanged
    rows = dict(FasterWhisperASR.available())
    assert "bundled copy" in rows["base"] or rows["base"].startswith("bundled")


def test_base_without_the_bundled_packages_comes_from_the_hub_cache(hub_cache, monkeypatch):
    monkeypatch.setattr(fw, "_bundled_installed", lambda: False)
    with pytest.raises(EvalkitError, match="pip install 'evalkit-tts\\[whisper\\]'"):
        FasterWhisperASR("base", "cpu")
    snapshot = put_in_hub(hub_cache, "Systran/faster-whisper-base", bundled_base())
    assert FasterWhisperASR("base", "cpu").folder == snapshot


def test_a_missing_name_fails_at_once_with_the_command_that_fetches_it(hub_cache, no_network):
    started = time.monotonic()
    with pytest.raises(EvalkitError) as info:
        FasterWhisperASR("large-v3", "cpu")
    message = str(info.value)
    assert "\n" not in message and time.monotonic() - started < 5
    assert "not available offline" in message and str(hub_cache) in message
    assert f"hf download Systran/faster-whisper-large-v3 --cache-dir {hub_cache}" in message
    assert f"{ALLOW_DOWNLOAD_ENV}=1" in message and "--allow-download" in message


def test_asr_list_shows_which_names_are_cached(hub_cache):
    put_in_hub(hub_cache, "Systran/faster-whisper-small", bundled_base())
    rows = FasterWhisperASR.available()
    models = [m for m, _ in rows]
    source = dict(rows)
    assert source["small"] == f"Hugging Face cache: Systran/faster-whisper-small ({hub_cache}/" \
                              f"models--Systran--faster-whisper-small/snapshots/{REV})"
    assert "large-v3" not in models and "large-v3" in source["NAME"] and ", small," not in source["NAME"]
    assert models[0] == "base" and models[-1] == "/path/to/dir"


@pytest.mark.parametrize("damage, said", [
    ("truncate", "model.bin truncated"),
    ("flip", "model.bin has sha256"),
    ("no-config", "config.json is missing"),
    ("blob-gone", "model.bin is missing (a link to a blob that is gone)"),
    ("no-tokenizer", "tokenizer.json is missing"),
])
def test_a_broken_cache_entry_is_one_line(hub_cache, damage, said):
    source = bundled_base()
    model_bin = None
    if damage == "truncate":
        with open(source / "model.bin", "rb") as f:
            model_bin = f.read(1 << 20)
    elif damage == "flip":
        data = bytearray((source / "model.bin").read_bytes())
        data[-1000] ^= 0xFF  # inside the last tensor: same length, headers intact
        model_bin = bytes(data)
    snapshot = put_in_hub(hub_cache, "Systran/faster-whisper-small", source, model_bin=model_bin)
    if damage == "no-config":
        (snapshot / "config.json").unlink()
    elif damage == "blob-gone":
        (snapshot.parent.parent / "blobs" / ct2_model_sha256(source)).unlink()  # the link, not the bundled file
    elif damage == "no-tokenizer":
        (snapshot / "tokenizer.json").unlink()
    with pytest.raises(EvalkitError) as info:
        FasterWhisperASR("small", "cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "the Hugging Face cache entry of Systran/faster-whisper-small is broken" in message
    assert said in message and str(snapshot) in message
    assert "hf download Systran/faster-whisper-small" in message and "--force-download" in message
    if damage == "truncate":
        assert dict(FasterWhisperASR.available())["small"].startswith("Hugging Face cache, broken: model.bin truncated")


def test_a_large_v3_layout_needs_its_preprocessor_config(tmp_path):
    """large-v3 takes 128 mel bands; without preprocessor_config.json faster-whisper would feed it 80."""
    import struct

    def ct2(n_mels: int) -> bytes:
        def s(text: str) -> bytes:
            raw = text.encode() + b"\0"
            return struct.pack("<H", len(raw)) + raw

        weight = struct.pack("<3I", 4, n_mels, 3)
        return (struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 3, 1) + s("encoder/conv1/weight")
                + struct.pack("<B", 3) + weight + struct.pack("<BI", 0, 4 * n_mels * 3 * 4)
                + b"\0" * (4 * n_mels * 3 * 4) + struct.pack("<I", 0))

    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(bundled_base() / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes(ct2(128))
    assert "preprocessor_config.json is missing" in fw._broken(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"feature_size": 128}')
    assert fw._broken(tmp_path) == ""
    (tmp_path / "model.bin").write_bytes(ct2(80) + b"junk")
    assert "4 unexpected bytes" in fw._broken(tmp_path)


def test_download_permission_is_read_strictly(monkeypatch):
    for value, allowed in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, value)
        assert download_allowed() is allowed
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "maybe")
    with pytest.raises(EvalkitError, match="must be 1 or 0"):
        download_allowed()


def test_an_allowed_download_goes_into_the_hub_cache_and_is_checked(hub_cache, monkeypatch, file_server):
    """snapshot_download is replaced by a stand-in that lays the bundled weights out as the hub
    would: what is under test is that evalkit downloads only when allowed, into HF_HUB_CACHE,
    the files faster-whisper needs, and then checks and digests them like any cache entry."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(put_in_hub(Path(kwargs["cache_dir"]), repo_id, bundled_base()))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{file_server.server_address[1]}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(EvalkitError, match="not available offline"):
        FasterWhisperASR("turbo", "cpu")
    assert [kw.get("local_files_only") for _, kw in calls] == [True]
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    turbo = FasterWhisperASR("turbo", "cpu")
    repo, kwargs = calls[-1]
    assert repo == "mobiuslabsgmbh/faster-whisper-large-v3-turbo" and kwargs["cache_dir"] == str(hub_cache)
    assert kwargs["allow_patterns"] == fw.HUB_FILES and not kwargs.get("local_files_only")
    assert turbo.folder.is_relative_to(hub_cache) and turbo.model_sha256 == ct2_model_sha256(bundled_base())


def test_hf_hub_offline_wins_over_the_permission(hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    with pytest.raises(EvalkitError, match="unset HF_HUB_OFFLINE"):
        FasterWhisperASR("tiny", "cpu")


def test_an_allowed_download_on_a_hanging_network_times_out(hub_cache, monkeypatch, silent_server):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", silent_server)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    started = time.monotonic()
    with pytest.raises(EvalkitError) as info:
        FasterWhisperASR("tiny", "cpu")
    assert time.monotonic() - started < 3  # one try: huggingface_hub's client alone would try 4 times
    message = str(info.value)
    assert "\n" not in message and "downloading Systran/faster-whisper-tiny from the Hugging Face hub failed" in message
    assert "timed out" in message and "hf download Systran/faster-whisper-tiny" in message


# --- through the command ---------------------------------------------------------------------


def test_an_unknown_name_exits_2_with_one_line(tmp_path, sqlite_uri, capsys):
    code, _, stderr = run_in_process(capsys, *run_args(tmp_path, sqlite_uri, "faster-whisper:large-v9"))
    line = one_line(stderr)
    assert code == 2 and "unknown faster-whisper model 'large-v9'" in line
    assert all(name in line for name in ("large-v3", "turbo", "distil-large-v3", "tiny.en"))
    assert not (tmp_path / "run").exists()


def test_a_broken_cache_entry_exits_2_with_one_line(tmp_path, sqlite_uri, capsys, hub_cache):
    with open(bundled_base() / "model.bin", "rb") as f:
        put_in_hub(hub_cache, "Systran/faster-whisper-large-v3", bundled_base(), model_bin=f.read(4096))
    code, _, stderr = run_in_process(capsys, *run_args(tmp_path, sqlite_uri, "faster-whisper:large-v3"))
    line = one_line(stderr)
    assert code == 2 and "cache entry of Systran/faster-whisper-large-v3 is broken: model.bin truncated" in line


@pytest.mark.skipif(not offline_for_real(), reason="this machine can reach the hub: it would really download")
def test_an_allowed_download_without_network_exits_2_fast(tmp_path, sqlite_uri, capsys, hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest sets it; a user may not
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    started = time.monotonic()
    code, _, stderr = run_in_process(capsys, *run_args(tmp_path, sqlite_uri, "faster-whisper:tiny"))
    assert time.monotonic() - started < 30
    line = one_line(stderr)
    assert code == 2 and "downloading Systran/faster-whisper-tiny from the Hugging Face hub failed" in line
    assert "Name or service not known" in line or "resolution" in line, line
    assert not (tmp_path / "run").exists()


# --- openai-whisper ---------------------------------------------------------------------------


@pytest.fixture
def whisper_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)
    folder = tmp_path / "xdg" / "whisper"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def openai_base():
    """openai-whisper's base, converted from the bundled weights once (into the session cache)."""
    pytest.importorskip("whisper", reason="pip install --no-deps openai-whisper==20250625")
    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    return OpenAIWhisperASR("base", "cpu")


def test_an_openai_name_resolves_from_its_cache(whisper_cache, openai_base, monkeypatch, no_network):
    import whisper

    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    (whisper_cache / "small.pt").symlink_to(openai_base.checkpoint)
    # A name's file is checked against the sha256 in openai's download address; these are the
    # bundled weights, so the address is made to publish theirs.
    with pytest.raises(EvalkitError) as info:
        OpenAIWhisperASR("small", "cpu")
    message = str(info.value)
    assert "\n" not in message and f"the openai-whisper cache entry {whisper_cache / 'small.pt'} is broken" in message
    assert "python -c \"import whisper; whisper.load_model('small', device='cpu')\"" in message
    monkeypatch.setitem(whisper._MODELS, "small",
                        f"https://openaipublic.azureedge.net/main/whisper/models/{openai_base.checkpoint_sha256}/small.pt")
    small = OpenAIWhisperASR("small", "cpu")
    info_small, info_base = small.describe(), openai_base.describe()
    assert small.checkpoint == whisper_cache / "small.pt" and info_small["model"] == "small"
    assert info_small["model_sha256"] == openai_base.checkpoint_sha256
    assert info_small["settings_digest"] == info_base["settings_digest"]
    assert ("small", f"openai-whisper cache: {whisper_cache / 'small.pt'}") in OpenAIWhisperASR.available()


def test_an_openai_name_is_the_file_load_model_writes(whisper_cache, openai_base, no_network):
    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    with pytest.raises(EvalkitError) as info:
        OpenAIWhisperASR("large", "cpu")  # openai-whisper saves `large` as large-v3.pt
    message = str(info.value)
    assert "\n" not in message and f"{whisper_cache / 'large-v3.pt'} is missing" in message
    assert "whisper.load_model('large', device='cpu')" in message and f"{ALLOW_DOWNLOAD_ENV}=1" in message
    with pytest.raises(EvalkitError, match="unknown openai-whisper model 'large-v9'.*large-v3-turbo"):
        OpenAIWhisperASR("large-v9", "cpu")


def test_an_allowed_openai_download_is_checked_and_atomic(whisper_cache, openai_base, monkeypatch, file_server):
    import whisper

    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    body = b"stand-in checkpoint: construction never loads it"
    file_server.RequestHandlerClass.body = body
    base_url = f"http://127.0.0.1:{file_server.server_address[1]}"
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    monkeypatch.setitem(whisper._MODELS, "tiny", f"{base_url}/{'0' * 64}/tiny.pt")
    with pytest.raises(EvalkitError, match="whose sha256 is .* not the published 000000000000"):
        OpenAIWhisperASR("tiny", "cpu")
    assert list(whisper_cache.iterdir()) == []  # nothing half-written is left to pass for a model
    monkeypatch.setitem(whisper._MODELS, "tiny", f"{base_url}/{hashlib.sha256(body).hexdigest()}/tiny.pt")
    tiny = OpenAIWhisperASR("tiny", "cpu")
    assert tiny.checkpoint == whisper_cache / "tiny.pt" and tiny.checkpoint.read_bytes() == body
    assert tiny.model_sha256 == hashlib.sha256(body).hexdigest()


def test_an_allowed_openai_download_on_a_hanging_network_times_out(whisper_cache, openai_base, monkeypatch,
                                                                    silent_server):
    import whisper

    import evalkit.asr
    from evalkit.asr.openai_whisper import OpenAIWhisperASR

    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    monkeypatch.setattr(evalkit.asr, "DOWNLOAD_TIMEOUT", 1.0)
    monkeypatch.setitem(whisper._MODELS, "tiny", f"{silent_server}/{'0' * 64}/tiny.pt")
    started = time.monotonic()
    with pytest.raises(EvalkitError) as info:
        OpenAIWhisperASR("tiny", "cpu")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message and "downloading openai-whisper tiny from" in message and "timed out" in message
    assert list(whisper_cache.iterdir()) == []


@pytest.mark.skipif(not offline_for_real(), reason="this machine can reach the hub: it would really download")
def test_an_allowed_openai_download_without_network_exits_2_fast(tmp_path, sqlite_uri, capsys, whisper_cache,
                                                                 monkeypatch, openai_base):
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    started = time.monotonic()
    code, _, stderr = run_in_process(capsys, *run_args(tmp_path, sqlite_uri, "openai-whisper:tiny"))
    assert time.monotonic() - started < 30
    line = one_line(stderr)
    assert code == 2 and "downloading openai-whisper tiny from https://openaipublic" in line and "failed" in line


def test_asr_options_change_the_decoding_and_its_digest(asr):
    from evalkit.asr import resolve
    from evalkit.asr.faster_whisper import PROMPTS, decode_options

    assert "initial_prompt" not in decode_options({})  # off by default
    assert decode_options({"prompt": "hangul-numbers"})["initial_prompt"] == PROMPTS["hangul-numbers"]
    assert decode_options({"prompt": "숫자는 한글로."})["initial_prompt"] == "숫자는 한글로."
    with pytest.raises(EvalkitError, match="has no option beam"):
        decode_options({"beam": "1"})
    prompted = resolve("faster-whisper:base", "cpu", None, {"prompt": "hangul-numbers"})
    assert prompted is not asr
    # Transcripts may change, so runs with and without it must not compare (nor share cached transcripts).
    assert prompted.describe()["settings_digest"] != asr.describe()["settings_digest"]
    assert resolve("faster-whisper:base", "cpu", None, {"prompt": "hangul-numbers"}) is prompted  # loaded once


def test_an_asr_option_the_engine_lacks_is_one_line(capsys):
    code, _, err = run_in_process(capsys, "run", "--suite", "en-base", "espeak:en-us", "--limit", "1",
                                  "--asr-option", "beam=1", "--out", "/nonexistent-never-written")
    assert code == 2 and err.strip().splitlines() == [
        "error: --asr-option: faster-whisper has no option beam (it has: prompt)"]
