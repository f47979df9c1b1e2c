"""Tests of what a run shows: trace.json, threads.png, progress, metrics (marker `observe`, set by this directory)."""
