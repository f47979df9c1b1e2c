"""Tests of gmpsim compare against the real Go toolchain (marker `compare`, set by this directory)."""
