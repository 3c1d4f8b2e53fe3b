"""Finding adapters, ASR backends and metrics: entry points, or an explicit "pkg.mod:Name".

An entry point may name the pip extra its plugin needs, the standard way:
`faster-whisper = "evalkit.asr.faster_whisper:FasterWhisperASR [whisper]"`. A plugin whose extra
is not installed is left out of `load_all` (an optional part that is absent is not an error),
and asking for it by name fails with one line that names the extra to install (`MissingExtra`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from functools import lru_cache
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points, packages_distributions
from typing import Any, TypeAlias

from .errors import EvalkitError, MissingExtra, first_line, whole

ADAPTERS = "evalkit.adapters"
ASR = "evalkit.asr"
METRICS = "evalkit.metrics"

# The class an entry point names. Any, not type[Any]: its contract (protocols.py) is checked where
# it is used, and mypy does not take type[...] as Hashable (asr.resolve caches by class).
PluginClass: TypeAlias = Any

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


def _entry_points(group: str) -> dict[str, EntryPoint]:
    """name -> entry point, the first registration of a name winning."""
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        out.setdefault(ep.name, ep)
    return out


def _target(ep: EntryPoint) -> str:
    """"pkg.mod:Name" without the entry point's "[extra]" suffix."""
    return f"{ep.module}:{ep.attr}" if ep.attr else ep.module


def _extras(ep: EntryPoint) -> list[str]:
    """The extras an entry point names ("mod:Name [a, b-c]"). Not EntryPoint.extras: Python 3.11
    splits that at every non-word character, so "openai-whisper" would read as two extras."""
    found = re.search(r"\[([^\]]*)\]\s*$", ep.value)
    return [e.strip() for e in found.group(1).split(",") if e.strip()] if found else []


def registered(group: str) -> dict[str, tuple[str, str]]:
    """name -> (target "pkg.mod:Name", distribution that registered it), in registration order."""
    return {name: (_target(ep), ep.dist.name if ep.dist is not None else "?")
            for name, ep in _entry_points(group).items()}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def _import_names() -> dict[str, tuple[str, ...]]:
    """normalized distribution name -> the top-level names it installs."""
    out: dict[str, list[str]] = {}
    for top, dists in packages_distributions().items():
        for dist in dists:
            out.setdefault(_normalize(dist), []).append(top)
    return {k: tuple(v) for k, v in out.items()}


def _importable(requirement: str) -> bool:
    """The distribution is installed and one of its top-level names can be imported (a name set
    to None in sys.modules, the way a test blocks a package, counts as absent)."""
    try:
        distribution(requirement)
    except PackageNotFoundError:
        return False
    names = _import_names().get(_normalize(requirement), ())
    # The module named like the distribution when there is one (tiktoken, not its tiktoken_ext).
    names = tuple(n for n in names if n.lower() == _normalize(requirement).replace("-", "_")) or names
    return not names or any(_findable(n) for n in names)


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # imported already, without a __spec__ (set up by hand): it is there
        return True
    except ImportError:
        return False


def extra_requirements(dist_requires: list[str] | None, extra: str) -> list[str]:
    """Distribution names that `extra` adds, read from a distribution's Requires-Dist lines."""
    out = []
    for line in dist_requires or ():
        spec, _, marker = line.partition(";")
        found = _EXTRA_MARKER.search(marker)
        name = _NAME.match(spec)
        if found and name and _normalize(found.group(1)) == _normalize(extra):
            out.append(name.group(1))
    return out


def unmet(ep: EntryPoint) -> MissingExtra | None:
    """Why the plugin behind `ep` cannot run here: the first requirement of its extras that is
    not installed, or None."""
    extras = _extras(ep)
    if ep.dist is None or not extras:
        return None
    requires = ep.dist.requires
    for extra in extras:
        for req in extra_requirements(requires, extra):
            if _normalize(req) != _normalize(ep.dist.name) and not _importable(req):
                return MissingExtra(req, extra, ep.dist.name)
    return None


def unavailable(group: str) -> dict[str, MissingExtra]:
    """name -> what to install, for every registered plugin of `group` whose extra is missing."""
    out = {}
    for name, ep in _entry_points(group).items():
        problem = unmet(ep)
        if problem is not None:
            out[name] = problem
    return out


def load_target(target: str) -> PluginClass:
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise EvalkitError(f"plugin reference {target!r} must look like 'package.module:Name'")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or whatever the module's own top level raised
        raise EvalkitError(f"cannot import {mod_name!r} for {target!r}: {whole(exc)}") from exc
    try:
        found: PluginClass = getattr(module, attr)
    except AttributeError:
        raise EvalkitError(f"{mod_name!r} has no attribute {attr!r}") from None
    return found


def load(group: str, name_or_target: str) -> PluginClass:
    """A registered name, or a "pkg.mod:Name" reference. A registered plugin whose extra is not
    installed raises MissingExtra (one line: what to pip install)."""
    if ":" in name_or_target:  # registered names never contain ':'
        return load_target(name_or_target)
    found = _entry_points(group)
    if name_or_target not in found:
        known = ", ".join(sorted(found)) or "none"
        raise EvalkitError(f"unknown {group.split('.')[-1].rstrip('s')} {name_or_target!r} (installed: {known})")
    ep = found[name_or_target]
    problem = unmet(ep)
    if problem is not None:
        raise problem
    return load_target(_target(ep))


_warned: set[str] = set()


def load_all(group: str, *, unmet_too: bool = False) -> list[tuple[str, PluginClass, str]]:
    """(name, class, distribution) of every plugin of `group` that imports. One that does not
    (a broken or half-installed package) is skipped with a one-line warning on stderr: it must
    not stop runs that never asked for it. Asking for it by name still fails loudly (`load`).
    Plugins whose extra is not installed are left out quietly, unless `unmet_too` (adapter
    resolution asks them whether they would claim a model, to say which extra it needs)."""
    out = []
    for name, ep in _entry_points(group).items():
        target, dist = _target(ep), ep.dist.name if ep.dist is not None else "?"
        missing = unmet(ep)
        if missing is not None and not unmet_too:
            continue
        try:
            out.append((name, load_target(target), dist))
        except Exception as exc:  # any import-time crash of somebody else's package
            if missing is None and target not in _warned:  # with its extra missing, failing is expected
                _warned.add(target)
                reason = first_line(exc, 200)
                print(f"warning: {group.split('.')[-1].rstrip('s')} plugin {name!r} from {dist} cannot be "
                      f"imported, skipped: {reason}", file=sys.stderr)
    return out
