"""Tests of the worker processes' own parts: the g0 arena, the reaper (marker `worker`, set by this directory)."""
