"""Tests of gmpsim bench, kept small (marker `bench`, set by this directory)."""
