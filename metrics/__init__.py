"""evalkit's first-party metrics (installed as the package `evalkit_metrics`).

One module per family; each class is registered once, as an `evalkit.metrics` entry point
in pyproject.toml. Each derives from evalkit.protocols.Metric; its constructor's keyword
parameters are its options (`evalkit run --metric-option f0.f0_method=dio`), recorded in
provenance and in every cache key.
"""
