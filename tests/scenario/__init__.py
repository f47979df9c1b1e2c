"""Tests of scenario files: loading, --set, the built-ins (marker `scenario`, set by this directory)."""
