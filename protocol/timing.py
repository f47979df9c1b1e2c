"""What both ends of the wire must agree on, written once: the resend and heartbeat timings of the
coordinator and the host agents, and newer Go's retry rule for a clone that fails with EAGAIN.
(Errnos are the standard library's `errno`.)"""

RESEND_S = 0.05  # an unanswered order or report is resent this often (WAKE, newosproc, watch, mexited...)
HEARTBEAT_S = 0.5  # the coordinator and a remote agent each beat this often
HEARTBEAT_TIMEOUT_S = 3.0  # a host silent this long is cut off (its Ms fenced); its agent rejoins afresh

#: newer Go's retryOnEAGAIN (runtime/retry.go, Go 1.20+; os_linux.go's newosproc): 20 tries,
#: sleeping (try+1) ms after each EAGAIN. Go 1.16 throws at the first.
RETRY_ON_EAGAIN_TRIES = 20

#: How long the host agent waits for its Ms to go after SIGKILL at the end of a run, and so how
#: long the coordinator waits for the agent: a base plus a share per M. Each killed M's exit costs
#: the kernel its page tables and copied pages; a fixed second left 58 of 5,870 Ms alive (bench).
KILL_WAIT_S = 1.0
KILL_WAIT_PER_M_S = 0.001
