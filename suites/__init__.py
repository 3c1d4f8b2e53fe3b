"""Built-in suites, shipped as package data (one folder per suite)."""
