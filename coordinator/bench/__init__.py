"""Benchmarks and load: gmpsim bench and the load generator it drives the loop with."""
