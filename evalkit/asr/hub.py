"""The Hugging Face hub cache (models--ORG--NAME/snapshots/REV with refs/main), read without
network, and the one place a download from the hub happens, when the user allowed it."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..cache import sha256_file
from ..errors import EvalkitError, first_line
from . import ALLOW_DOWNLOAD_ENV


def cache_root() -> Path:
    """The folder huggingface_hub downloads into, by its own rules (HF_HUB_CACHE, the older
    HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub).
    huggingface_hub reads these once, at import; they are read here at each call and the
    folder is passed explicitly, so a variable set after the import still counts."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                              "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home)), "hub")


def fetch_command(repo: str, *, again: bool = False, revision: str | None = None) -> str:
    """The shell command that puts `repo` (at `revision`, else its main branch) into the cache evalkit reads."""
    import huggingface_hub

    try:
        major_minor = tuple(int(x) for x in huggingface_hub.__version__.split(".")[:2])
    except ValueError:
        major_minor = (1, 0)
    # `hf` replaced huggingface-cli in huggingface_hub 0.34.
    cli = "hf download" if major_minor >= (0, 34) else "huggingface-cli download"
    where = f" --cache-dir {cache_root()}" if cache_root() != _default_root() else ""
    return f"{cli} {repo}{f' --revision {revision}' if revision else ''}{where}{' --force-download' if again else ''}"


def _default_root() -> Path:
    return Path(os.path.expanduser("~/.cache/huggingface/hub"))


def cached(repo: str, patterns: Sequence[str], revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo`'s main revision (or `revision`: a branch, tag or commit the
    cache knows) in the cache, or None. Never touches the network. Whether the folder is whole is
    for the caller to check."""
    from huggingface_hub import errors, snapshot_download

    # huggingface_hub 2 refuses a folder its cached file listing finds incomplete; the caller
    # checks the files the engine opens and names the missing one, so the folder is taken.
    incomplete = getattr(errors, "IncompleteSnapshotError", ())
    try:
        return Path(snapshot_download(repo, cache_dir=str(cache_root()), local_files_only=True,
                                      allow_patterns=list(patterns), revision=revision))
    except incomplete as exc:
        folder = getattr(exc, "snapshot_path", None)
        return Path(folder) if folder else None
    except errors.LocalEntryNotFoundError:
        return None


def download(repo: str, patterns: Sequence[str], revision: str | None = None) -> Path:
    """Fetch `repo`'s `patterns` (at `revision`, else main) into the cache; any failure is one EvalkitError line."""
    from huggingface_hub import constants, snapshot_download

    from . import DOWNLOAD_TIMEOUT  # read at the call: a test or a script may change it

    if constants.HF_HUB_OFFLINE:  # what the hub honours, fixed when it was imported
        raise EvalkitError(f"cannot download {repo}: {ALLOW_DOWNLOAD_ENV}=1 allows it but HF_HUB_OFFLINE=1 "
                           "keeps huggingface_hub off the network; unset HF_HUB_OFFLINE")
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DOWNLOAD_TIMEOUT)
    try:
        _probe(f"{constants.ENDPOINT}/api/models/{repo}", timeout)
        folder = snapshot_download(repo, cache_dir=str(cache_root()), allow_patterns=list(patterns),
                                   etag_timeout=timeout, revision=revision)
    except Exception as exc:  # connection, HTTP, timeout, disk errors all come in their own types
        raise EvalkitError(f"downloading {repo} from the Hugging Face hub failed ({_reason(exc)}); "
                           "check the network, or fetch it where there is one: "
                           f"{fetch_command(repo, revision=revision)}") from None
    return Path(str(folder))


def checked_sha256(path: Path) -> tuple[str, str]:
    """(sha256 of the file, "" or what is wrong with it). A cached LFS file is a link to
    blobs/<its sha256>: the digest that provenance needs anyway also proves the download whole."""
    digest = sha256_file(path)
    published = os.path.basename(os.readlink(path)) if path.is_symlink() else ""
    if len(published) == 64 and all(c in "0123456789abcdef" for c in published) and published != digest:
        return digest, (f"{path.name} has sha256 {digest[:12]}..., not the hub's {published[:12]}... "
                        "(a corrupted or interrupted download)")
    return digest, ""


def _probe(url: str, timeout: float) -> None:
    """One request with a timeout and no retries, before huggingface_hub's: its first request
    has no timeout and its client tries again after one (4 x the timeout on a network that
    swallows packets). Any HTTP answer, even an error, shows the network is there; the hub's own
    calls then report what it means."""
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(url, timeout=timeout).close()


def _reason(exc: BaseException) -> str:
    # The hub wraps connection errors in LocalEntryNotFoundError with a paragraph of advice, and
    # urllib in URLError: the wrapped error is the reason.
    while exc.__cause__ is not None:
        exc = exc.__cause__
    reason = getattr(exc, "reason", None)
    return first_line(reason if isinstance(reason, BaseException) else exc, 200, typed=True)
