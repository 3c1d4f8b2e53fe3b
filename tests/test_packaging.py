"""Packaging: what the core needs is declared in the core, heavy parts sit behind extras that
exist, constraints.txt pins everything pyproject.toml names, a missing extra is one line naming
it, and a built wheel (not only the editable install) carries the suites, the report templates
and the plugin registrations."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from evalkit import adapters, plugins
from evalkit.errors import EvalkitError, MissingExtra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = PROJECT["name"]
FIRST_PARTY = {"evalkit", "evalkit_metrics", "evalkit_suites", "evalkit_reports"}
# Imported by evalkit but declared by no extra, on purpose: openai-whisper declares triton
# (about 1 GB, useless on CPU), so scripts/setup.sh installs it with --no-deps and the
# openai-whisper extra carries only what it needs at run time.
UNDECLARED = {"whisper": "openai-whisper"}
# (group, entry point name, a module it needs, the extra that provides it, a model it would load)
BLOCKED = [
    (plugins.ASR, "faster-whisper", "faster_whisper", "whisper"),
    (plugins.ASR, "openai-whisper", "tiktoken", "openai-whisper"),
    (plugins.ADAPTERS, "piper", "piper", "piper"),
    (plugins.ADAPTERS, "torch", "torch", "torch"),
    (plugins.ADAPTERS, "hf", "transformers", "hf"),
    (plugins.METRICS, "dnsmos", "speechmos", "dnsmos"),
    (plugins.METRICS, "pesq", "pesq", "signal"),
    (plugins.METRICS, "mcd", "pyworld", "signal"),
    (plugins.METRICS, "spk_sim", "resemblyzer", "speaker"),
]


def requirements(extra: str | None = None) -> list[Requirement]:
    """The core's requirements, or one extra's (self-references like evalkit-tts[a,b] left out)."""
    lines = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != canonicalize_name(NAME)]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


CORE = names(requirements())
EXTRAS = {extra: names(requirements(extra)) for extra in PROJECT["optional-dependencies"]}


def source_files() -> list[tuple[str, Path]]:
    """(module name, file) of every module of evalkit and evalkit_metrics."""
    out = []
    for package, folder in (("evalkit", ROOT / "evalkit"), ("evalkit_metrics", ROOT / "metrics")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            out.append((".".join((package, *parts)).removesuffix(".__init__"), path))
    return out


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of the absolute imports of a file: (at module level, inside functions).
    Module level includes top-level try/if blocks, but not `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()

    def visit_top(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top.update(_names(node))
            elif isinstance(node, (ast.If, ast.Try)):
                visit_top(node.body + node.orelse + getattr(node, "finalbody", [])
                          + [s for h in getattr(node, "handlers", []) for s in h.body])

    visit_top(tree.body)
    every = {n for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for n in _names(node)}
    return top, every - top


def _names(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        return {node.module.split(".")[0]} if node.level == 0 and node.module else set()
    return {alias.name.split(".")[0] for alias in node.names}


def third_party(names_: set[str]) -> set[str]:
    return {n for n in names_ if n not in sys.stdlib_module_names and n not in FIRST_PARTY}


@functools.cache
def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages_distributions().get(module, [])}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return packages_distributions()


def entry_point_extras() -> dict[str, set[str]]:
    """module -> the extras the entry points naming a class of that module declare ("" for none)."""
    out: dict[str, set[str]] = {}
    for group in (plugins.ADAPTERS, plugins.ASR, plugins.METRICS):
        for value in PROJECT["entry-points"][group].values():
            found = re.search(r"\[([^\]]*)\]", value)
            extras = {e.strip() for e in found.group(1).split(",")} if found else {""}
            out.setdefault(value.split(":")[0].strip(), set()).update(extras)
    return out


# --- what is declared where ------------------------------------------------------------------


def test_module_level_imports_are_core_dependencies():
    """Every module of evalkit and evalkit_metrics imports with the core alone: its module-level
    third-party imports are all declared in [project] dependencies (heavy ones are imported inside
    the functions that use them)."""
    missing = []
    for module, path in source_files():
        for name in sorted(third_party(imports(path)[0])):
            if not distributions_of(name) & CORE:
                missing.append(f"{module}: {name} ({', '.join(distributions_of(name)) or 'not installed'})")
    assert not missing, "module-level imports not in the core dependencies: " + "; ".join(missing)


def test_lazy_imports_are_declared_by_the_extra_of_their_plugin():
    """An import inside a function of a plugin's module is declared by the core or by that
    plugin's extra; in any other module, by the core or some extra."""
    by_module = entry_point_extras()
    every_extra = set().union(*EXTRAS.values())
    missing = []
    for module, path in source_files():
        extras = by_module.get(module)
        allowed = CORE | (set().union(*(EXTRAS.get(e, set()) for e in extras)) if extras else every_extra)
        for name in sorted(third_party(imports(path)[1])):
            if name in UNDECLARED:
                continue
            if not distributions_of(name) & allowed:
                missing.append(f"{module}: {name} (extras {sorted(extras) if extras else 'any'})")
    assert not missing, "lazy imports no declared dependency provides: " + "; ".join(missing)


def test_every_extra_named_anywhere_exists():
    declared = set(PROJECT["optional-dependencies"])
    named = {e for extras in entry_point_extras().values() for e in extras if e}
    for _, path in source_files():
        text = path.read_text(encoding="utf-8")
        for found in re.findall(rf"{re.escape(NAME)}\[([\w,\s-]+)\]", text):
            named.update(e.strip() for e in found.split(","))
        named.update(re.findall(r"MissingExtra\([^,()]+,\s*[\"']([\w-]+)[\"']", text))
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for found in re.findall(r"\.\[([\w,-]+)\]", setup):
        named.update(found.split(","))
    assert named and named <= declared, f"extras named but not declared: {sorted(named - declared)}"


def test_all_holds_every_runtime_extra():
    (line,) = PROJECT["optional-dependencies"]["all"]
    req = Requirement(line)
    assert canonicalize_name(req.name) == canonicalize_name(NAME)
    assert req.extras == set(PROJECT["optional-dependencies"]) - {"all", "test"}


def test_no_exact_pins_in_pyproject():
    """Exact versions live in constraints.txt; the library itself states ranges."""
    pinned = [str(r) for extra in [None, *EXTRAS] for r in requirements(extra)
              if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, pinned


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = pinned
    return pins


def test_constraints_pin_every_declared_dependency_within_its_range():
    pins = constraints()
    reqs = [r for extra in [None, *EXTRAS] for r in requirements(extra)]
    unpinned = sorted({r.name for r in reqs if canonicalize_name(r.name) not in pins})
    assert not unpinned, f"constraints.txt lacks {unpinned}"
    outside = [f"{r} vs =={pins[canonicalize_name(r.name)]}" for r in reqs
               if not r.specifier.contains(Version(pins[canonicalize_name(r.name)]), prereleases=True)]
    assert not outside, f"pins outside the declared ranges: {outside}"
    # ...and the package setup.sh installs --no-deps is pinned too.
    assert all(canonicalize_name(d) in pins for d in UNDECLARED.values())
    assert canonicalize_name(NAME) not in pins and "evalkit-test-tiny-tts" not in pins


def test_installed_versions_are_the_pinned_ones():
    """This environment is the verified one: what CI installs from constraints.txt is what runs here."""
    differ = []
    for name, pinned in constraints().items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue  # e.g. a platform-specific package; the pin then does nothing
        if Version(have) != Version(pinned):
            differ.append(f"{name} {have} (pinned {pinned})")
    assert not differ, "installed versions differ from constraints.txt (regenerate it, see its header): " + \
        "; ".join(differ)


# --- a missing extra is one line naming it -----------------------------------------------------


@pytest.mark.parametrize("group, name, module, extra", BLOCKED, ids=[b[1] for b in BLOCKED])
def test_a_missing_extra_names_the_extra(monkeypatch, capsys, group, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` does when it is not installed
    with pytest.raises(MissingExtra) as caught:
        plugins.load(group, name)
    message = str(caught.value)
    assert message.endswith(f"is not installed: pip install '{NAME}[{extra}]'") and "\n" not in message
    assert caught.value.exit_code == 2 and caught.value.extra in PROJECT["optional-dependencies"]
    # Not asked for by name, it is left out quietly: an absent optional part is not a broken plugin.
    assert name not in [n for n, _, _ in plugins.load_all(group)]
    assert name in plugins.unavailable(group)
    assert capsys.readouterr().err == ""


def test_without_extras_everything_else_still_loads(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos", None)
    assert {"intelligibility", "mel_dtw", "f0"} <= {n for n, _, _ in plugins.load_all(plugins.METRICS)}
    assert {"espeak", "cmd", "http", "wavdir"} <= {n for n, _, _ in plugins.load_all(plugins.ADAPTERS)}


def test_a_model_only_a_missing_adapter_loads_names_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(MissingExtra, match=r"piper-tts is not installed: pip install 'evalkit-tts\[piper\]'"):
        adapters.resolve("piper:joe")
    # A model nobody claims still says which (installed) adapters were tried, without piper.
    with pytest.raises(EvalkitError, match="no adapter loads") as caught:
        adapters.resolve("nosuch:model")
    # (the tests' own degraded-piper plug-in is installed, and is not the piper adapter)
    assert not re.search(r"(?<![\w-])piper\b", str(caught.value)) and "espeak" in str(caught.value)


def test_missing_extra_survives_pickling():
    """A metric worker process may raise it: it must arrive in the parent as it was."""
    import pickle

    again = pickle.loads(pickle.dumps(MissingExtra("pesq", "signal")))
    assert isinstance(again, MissingExtra) and str(again) == "pesq is not installed: pip install 'evalkit-tts[signal]'"


@pytest.mark.parametrize("module, model, metric, extra", [
    ("faster_whisper", "espeak:en-us", "intelligibility", "whisper"),
    ("piper", "piper:joe", "f0", "piper"),
    ("speechmos", "espeak:en-us", "dnsmos", "dnsmos"),
])
def test_the_command_gives_one_line_and_exit_2(tmp_path, module, model, metric, extra):
    """`evalkit run` with the package blocked as if it were not installed: exit 2, one line on
    stderr naming the extra, no traceback, nothing written."""
    args = ["run", "--suite", "en-base", model, "--limit", "1", "--metrics", metric, "--workers", "0",
            "--out", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = ['evalkit', *{args!r}]; "
            "runpy.run_module('evalkit', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(f"is not installed: pip install '{NAME}[{extra}]'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, module, name, extra", [
    (["metrics"], "speechmos", "dnsmos", "dnsmos"),
    (["asr", "list"], "faster_whisper", "faster-whisper", "whisper"),
    (["adapters"], "piper", "piper", "piper"),
])
def test_listings_show_what_a_missing_extra_leaves_out(tmp_path, command, module, name, extra):
    """A core install lists the plugins it cannot load, with what to install, instead of an empty table."""
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = ['evalkit', *{command!r}]; "
            "runpy.run_module('evalkit', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if f" {name} " in line and "not available" in line)
    assert f"pip install '{NAME}[{extra}]'" in row


def extra_only_modules() -> set[str]:
    """Top-level modules of the distributions only extras bring in: not the core's, nor anything
    the core's dependencies pull in themselves."""
    closure, todo = set(), list(CORE)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):  # not behind an extra
                todo.append(canonicalize_name(req.name))
    extra_only = set().union(*EXTRAS.values()) - closure - EXTRAS["test"]
    mods = {m for m, dists in _packages_distributions().items()
            if {canonicalize_name(d) for d in dists} & extra_only and m.isidentifier()}
    return mods | set(UNDECLARED)


def test_the_core_imports_with_every_extra_missing():
    """Every module imports, and the plugins that need no extra load, in a process where every
    package only an extra brings in is blocked as if it were not installed."""
    blocked = sorted(extra_only_modules())
    assert {"faster_whisper", "torch", "piper", "speechmos", "pesq", "pyworld", "resemblyzer"} <= set(blocked)
    modules = [m for m, _ in source_files() if not m.endswith("__main__")]
    code = (f"import importlib, json, sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "from evalkit import plugins\n"
            "for g in (plugins.ADAPTERS, plugins.ASR, plugins.METRICS):\n"
            "    print(json.dumps([[n for n, _, _ in plugins.load_all(g)], list(plugins.unavailable(g))]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no plugin reported broken
    listed = [json.loads(line) for line in proc.stdout.splitlines()]
    (tts, tts_missing), (asr, asr_missing), (metrics, metrics_missing) = listed
    assert {"espeak", "cmd", "http", "wavdir"} <= set(tts) and {"piper", "torch", "torchscript"} <= set(tts_missing)
    assert "faster-whisper" not in asr and {"faster-whisper", "openai-whisper"} <= set(asr_missing)
    assert {"intelligibility", "mel_dtw", "f0"} <= set(metrics)
    assert {"dnsmos", "pesq", "stoi", "mcd", "spk_sim"} <= set(metrics_missing)


# --- the built wheel ----------------------------------------------------------------------------


@pytest.mark.slow  # builds a wheel and installs it
def test_wheel_ships_suites_templates_and_entry_points(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("evalkit_tts-*.whl"))
    archive = zipfile.ZipFile(wheel)
    names_ = set(archive.namelist())
    for suite in ("ko-base", "ko-numbers", "en-base"):  # every built-in suite, with its README
        assert {f"evalkit_suites/{suite}/{f}" for f in ("suite.yaml", "utterances.jsonl", "README.md")} <= names_
    assert "evalkit_metrics/intelligibility.py" in names_
    assert not any(n.startswith("metrics/") for n in names_)  # `import metrics` must not exist
    templates = [p.name for p in (ROOT / "reports" / "templates").glob("*") if p.suffix in (".j2", ".css")]
    assert templates and {f"evalkit_reports/{t}" for t in templates} <= names_
    info = next(n.split("/")[0] for n in names_ if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(f"{info}/METADATA").decode()
    assert set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M)) == set(PROJECT["optional-dependencies"])
    assert "evalkit.asr.faster_whisper:FasterWhisperASR [whisper]" in archive.read(f"{info}/entry_points.txt").decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = ("import evalkit, evalkit.suite as s, evalkit.plugins as p, evalkit.report as r; "
             "print(evalkit.__file__); print(s.load('ko-base').source); "
             "print(sorted(p.registered(p.ADAPTERS))); print(r.template_dir()); "
             "print(s.load('ko-numbers').source)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(target)) and out[1].startswith(str(target))
    assert "espeak" in out[2] and "piper" in out[2]
    assert out[3].startswith(str(target)) and out[4].startswith(str(target))
