"""evalkit: a TTS evaluation harness with experiment tracking."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evalkit-tts")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
