"""Observers of a run: trace, progress, metrics, plot, report, latency."""
