"""A built wheel (not only the editable install) carries the suites and the plugin registrations."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_suites_and_entry_points(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("evalkit_tts-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "evalkit_suites/ko-base/utterances.jsonl" in names
    assert "evalkit_suites/en-base/suite.yaml" in names
    assert "evalkit_metrics/intelligibility.py" in names
    assert not any(n.startswith("metrics/") for n in names)  # `import metrics` must not exist

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = ("import evalkit, evalkit.suite as s, evalkit.plugins as p; "
             "print(evalkit.__file__); print(s.load('ko-base').source); "
             "print(sorted(p.registered(p.ADAPTERS)))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(target)) and out[1].startswith(str(target))
    assert "espeak" in out[2] and "piper" in out[2]
