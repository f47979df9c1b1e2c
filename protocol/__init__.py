"""The wire and the vocabulary the coordinator and the workers share (neither imports the other).

messages.py (the catalogue), codec.py, transport.py, ops.py (one row per op), stepper.py (the op
stepper), timing.py (shared timings), owner.py (who owns a leftover), throw.py (Go's throw).
"""
