"""Reading files that come from other people: suites in a pull request, a colleague's run folder.

The rules every reader of such input follows, in one place:
- a path named inside the input resolves (symlinks included) to a place inside the folder the
  input owns, or it is refused (`inside`): a suite cannot make evalkit read /etc/passwd;
- a name that becomes a folder or an MLflow experiment is a plain token (`check_name`), a run
  id 32 hex digits (`is_run_id`);
- YAML is read with a size cap and a cap on the nodes its aliases expand to (`load_yaml`): a
  "billion laughs" file is refused in milliseconds instead of taking gigabytes.
Each refusal is an EvalkitError: one line, exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import EvalkitError, first_line

YAML_MAX_BYTES = 1 << 20  # a suite header or sidecar is a few hundred bytes
YAML_MAX_NODES = 100_000  # after alias expansion; a header has tens
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def inside(root: Path, rel: str | Path, what: str) -> Path:
    """`root / rel` with symlinks resolved, refused unless it stays inside `root`."""
    rel = Path(str(rel))
    base = root.resolve()
    path = (base / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(base):
        raise EvalkitError(f"{what} {str(rel)!r} is outside {root}: only files inside it are read")
    return path


def check_name(name: object, what: str) -> str:
    """A name that becomes part of a folder or an experiment: letters, digits, '.', '_', '-'."""
    text = str(name)
    if not _NAME.fullmatch(text) or ".." in text:
        raise EvalkitError(f"{what} {text!r} must be letters, digits, '.', '_' or '-' (at most 128, no '..')")
    return text


def is_run_id(text: str) -> bool:
    """An MLflow or evalkit run id: 32 lowercase hex digits, nothing more (not even a newline).
    Checked before a run id read from input names a cache folder or goes into an MLflow filter."""
    return _RUN_ID.fullmatch(text) is not None


def load_yaml(path: Path, max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES):
    """yaml.safe_load of `path`, refusing files over `max_bytes` and documents whose aliases
    expand to more than `max_nodes` nodes (composed first: the composer shares aliased nodes,
    so counting them costs no more than the file itself)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise EvalkitError(f"{path}: {size} bytes, larger than the {max_bytes}-byte limit for a YAML file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"{path}: not a readable YAML file ({first_line(exc)})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        _count(node, max_nodes, {}, set())
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvalkitError(f"{path}: not valid YAML ({first_line(exc)})") from None
    except _TooBig:
        raise EvalkitError(f"{path}: its aliases expand to more than {max_nodes} YAML nodes "
                           "(an alias bomb?); write the values out") from None
    except RecursionError:
        raise EvalkitError(f"{path}: YAML nested too deeply") from None


class _TooBig(Exception):
    pass


def _count(node: yaml.Node, limit: int, sizes: dict[int, int], active: set[int]) -> int:
    """Nodes in the fully expanded tree below `node`, memoized per shared node."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:  # a recursive alias: it would expand forever
        raise _TooBig
    active.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _count(child, limit, sizes, active)
            if total > limit:
                raise _TooBig
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _count(k, limit, sizes, active) + _count(v, limit, sizes, active)
            if total > limit:
                raise _TooBig
    active.discard(key)
    sizes[key] = total
    return total
