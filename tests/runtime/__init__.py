"""Tests of the pure core (coordinator/runtime/): Go's cases, the Hypothesis machine, the mutants; no process, no socket (marker `runtime`, set by this directory)."""
