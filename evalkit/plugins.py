"""Finding adapters, ASR backends and metrics: entry points, or an explicit "pkg.mod:Name"."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

from .errors import EvalkitError, first_line, whole

ADAPTERS = "evalkit.adapters"
ASR = "evalkit.asr"
METRICS = "evalkit.metrics"


def registered(group: str) -> dict[str, tuple[str, str]]:
    """name -> (target "pkg.mod:Name", distribution that registered it), in registration order."""
    out: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        out.setdefault(ep.name, (ep.value, dist))
    return out


def load_target(target: str) -> type:
    mod_name, _, attr = target.partition(":")
    if not attr:
        raise EvalkitError(f"plugin reference {target!r} must look like 'package.module:Name'")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or whatever the module's own top level raised
        raise EvalkitError(f"cannot import {mod_name!r} for {target!r}: {whole(exc)}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EvalkitError(f"{mod_name!r} has no attribute {attr!r}") from None


def load(group: str, name_or_target: str) -> type:
    """A registered name, or a "pkg.mod:Name" reference."""
    if ":" in name_or_target:  # registered names never contain ':'
        return load_target(name_or_target)
    found = registered(group)
    if name_or_target not in found:
        known = ", ".join(sorted(found)) or "none"
        raise EvalkitError(f"unknown {group.split('.')[-1].rstrip('s')} {name_or_target!r} (installed: {known})")
    return load_target(found[name_or_target][0])


_warned: set[str] = set()


def load_all(group: str) -> list[tuple[str, type, str]]:
    """(name, class, distribution) of every plugin of `group` that imports. One that does not
    (a broken or half-installed package) is skipped with a one-line warning on stderr: it must
    not stop runs that never asked for it. Asking for it by name still fails loudly (`load`)."""
    out = []
    for name, (target, dist) in registered(group).items():
        try:
            out.append((name, load_target(target), dist))
        except Exception as exc:  # any import-time crash of somebody else's package
            if target not in _warned:
                _warned.add(target)
                reason = first_line(exc, 200)
                print(f"warning: {group.split('.')[-1].rstrip('s')} plugin {name!r} from {dist} cannot be "
                      f"imported, skipped: {reason}", file=sys.stderr)
    return out
