#!/usr/bin/env bash
# Installs everything evalkit and its tests need on a fresh Debian machine: espeak-ng from apt,
# then a virtual environment in .venv with the CPU torch wheel and evalkit (editable, with every
# extra and the test tools), at the exact versions in constraints.txt. Safe to re-run. Offline
# apart from the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: the offline voice (Korean included). chromium + fonts-nanum: the report tests open
# the HTML report headless; without a CJK font Korean renders as empty boxes.
APT=()
command -v espeak-ng >/dev/null 2>&1 || APT+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || APT+=(chromium)
fc-list 2>/dev/null | grep -qi nanum || APT+=(fonts-nanum)
if [ ${#APT[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "evalkit needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# pip install, quietly, at the verified versions (constraints.txt); its "location is ignored"
# notes about this machine's package mirrors are dropped, a failing install still stops here.
pip_install() {
    local out rc=0
    out=$(.venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1) || rc=$?
    [ -z "$out" ] || grep -v "is ignored" <<<"$out" || true
    return "$rc"
}
# torch first and pinned: the CPU wheel; anything unpinned resolves to multi-GB CUDA builds.
pip_install -c constraints.txt torch==2.13.0
# evalkit with every extra and the test tools (pytest, the peer libraries, ruff, mypy).
# setuptools<81 comes with the signal and speaker extras: pyworld and webrtcvad import pkg_resources.
pip_install -c constraints.txt -e ".[all,test]"
# openai-whisper declares triton (about 1 GB, useless on CPU): install it without its declared
# dependencies; the ones it really uses come with the openai-whisper extra (in `all`). Its version
# comes from constraints.txt.
pip_install -c constraints.txt --no-deps openai-whisper
# The tests' tiny PyTorch TTS model, registered as an adapter plugin the way a user's would be.
pip_install --no-deps --no-build-isolation -e tests/plugins/tiny_tts
.venv/bin/python -W "ignore:pkg_resources is deprecated" -c "import evalkit, evalkit_metrics, evalkit_suites, faster_whisper, piper, speechmos, whisper, pyworld, resemblyzer" \
    || { echo "setup failed: evalkit does not import" >&2; exit 1; }
