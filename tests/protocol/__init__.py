"""Tests of the wire and the op vocabulary (protocol/): codec, catalogue, op compiler and stepper (marker `protocol`, set by this directory)."""
