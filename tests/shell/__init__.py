"""Tests of the coordinator's shell with real processes: runs, hostile input and peers, machine limits, hosts in network namespaces (marker `shell`, set by this directory)."""
