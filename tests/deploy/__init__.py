"""Tests of deploy/: validated offline, and run for real in containers (marker `deploy`, set by this directory)."""
