"""The Go runtime's M machinery, re-enacted as a pure state machine: Go 1.16's proc.go and friends.

One module per part of the runtime, named as in Go: sched (runtime2.go's schedt, m, p, g),
proc (startm, handoffp, wakep, stopm, mput/mget...), newm (newm, allocm, the template thread),
schedule (schedule, execute, park_m, woken), findrunnable (with checkTimers and stealing), newproc
(newproc, gfget/gfput, ready), syscall (entersyscall, exitsyscall...), lockosthread,
sysmon (sysmon, retake), timers and netpoll, checkdead, note (notesleep/notewakeup), mdead (not
in Go: an M whose process died), schedtrace (GODEBUG=schedtrace), core (the front door: schedinit
and step; prepare checks an event, handlers carry it out), invariants (what must hold between two
steps, per subject in invariants_m, _p, _g), effects (what the shell must do).

Nothing here touches a socket, a clock, a process or a file (an import-linter contract in
pyproject.toml keeps it so). `core.step(sched, event, now)` is the only way in: the shell hands it
one event (an M's message, or sysmon's, a timer's, a fault's), with the Go time; the core changes
`sched` as the Go function would and returns effects (Fork, Wake, Park, Execute, Exit, ...) that
the shell carries out. `sched.lock` is the shell's single event loop: every step runs under it.

How a blocking Go call is re-enacted
------------------------------------

In Go, an M that has nothing to do calls stopm, which puts it on sched.midle and blocks in
notesleep(&m.park) until startm hands it a P and calls notewakeup; then stopm returns, and its
caller goes on at its next line: findrunnable's `goto top`, or schedule() after exitsyscall0
and startlockedm. stoplockedm blocks the same way with its locked goroutine; findrunnable's
netpoll(delay) blocks in epoll_wait until the next timer or a netpollBreak.

A pure core cannot block. So each of these functions returns instead whether the M really
sleeps: mPark records in the M *what* it sleeps in (m.parked, a Parked: STOPM, STOPLOCKEDM,
NETPOLL, or M0 for an m0 wedged by mexit) and, for stopm, *where* it goes on (m.resume, a Resume:
FINDRUNNABLE or SCHEDULE), emits a Park effect, and returns True; every caller then returns
too, unwinding to step(), exactly as far as Go's stack would be frozen. The M's process really
sleeps (it waits for a message). When the notewakeup comes (startm's Wake, or the netpoll wait
ending), the shell delivers the M's "woken" event and schedule.woken goes on where Go would:
unpark (the one way out of mPark), then the rest of the blocking function (stopm_return:
acquirep(nextp)), then its caller's next line, chosen by m.resume. When the wakeup had already
come before the sleep (notesleep finds the key set), mPark returns False and the caller goes on
at once in the same step, through the same stopm_return.

So `if stopm(sched, mp, Resume.FINDRUNNABLE): return` reads as Go's `stopm()`: the line after it
runs either now (no sleep) or later in woken (after one), never twice, never from anywhere else.
"""
