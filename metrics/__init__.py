"""evalkit's first-party metrics (installed as the package `evalkit_metrics`).

One module per family; each class is registered once, as an `evalkit.metrics` entry point
in pyproject.toml.
"""
