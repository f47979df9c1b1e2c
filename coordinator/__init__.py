"""gmpsim's coordinator: the pure Go runtime and the shell that carries its effects out.

runtime/ (the Go twins, no I/O), shell/ (the event loop's pieces), faults/, observe/, bench/,
compare/, commands/ and cli.py (the command line), scenario.py and scenarios/ (the scenario file).
"""
