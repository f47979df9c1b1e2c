"""Fault injection: the fault language and seeded planner (plan), the injector (inject)."""
