"""Tests of the fault language and planner, and fault-injection runs with real processes (marker `faults`, set by this directory)."""
