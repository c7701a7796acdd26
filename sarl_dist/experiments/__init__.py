"""Experiments over many runs: sweeps of tasks x seeds x methods on one Ray cluster."""
