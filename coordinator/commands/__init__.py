"""The commands of `gmpsim` (coordinator/cli.py parses the arguments and calls one).

Exit codes, for every command: 0 the outcome is what was expected · 1 it is not · 2 bad input ·
3 aborted (a time limit or Ctrl-C)."""

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_ABORTED = 0, 1, 2, 3
