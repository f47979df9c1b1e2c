"""The processes that are Ms and host agents.

m.py (an M: mstart, the schedule loop, newosproc as a fork), run_ops.py (goroutine ops through the
op stepper), g0.py (the g0 stack arena), agent.py and hostms.py (the host agent: the template
thread), forker.py and spare.py (the spawned process that forks the Ms, and the Ms it forks ahead;
its fork is protocol/bare_fork.py's, without Python's at-fork work), reaper.py, machine_limits.py.
"""
