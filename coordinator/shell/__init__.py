"""The process shell: the event loop, delivery of effects, the run's start and end, /proc."""
