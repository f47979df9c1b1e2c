"""gmpsim's tests: one directory per part, shared helpers at the top (README, Development)."""
