"""What both ends of the wire must agree on, written once: the resend and heartbeat timings of the
coordinator and the host agents, and newer Go's retry rule for a clone that fails with EAGAIN.
(Errnos are the standard library's `errno`.)"""

RESEND_S = 0.05  # an unanswered order or report is resent this often (WAKE, newosproc, watch, mexited...)
HEARTBEAT_S = 0.5  # the coordinator and a remote agent each beat this often
HEARTBEAT_TIMEOUT_S = 3.0  # a host silent this long is cut off (its Ms fenced); its agent rejoins afresh

#: newer Go's retryOnEAGAIN (runtime/retry.go, Go 1.20+; os_linux.go's newosproc): 20 tries,
#: sleeping (try+1) ms after each EAGAIN. Go 1.16 throws at the first.
RETRY_ON_EAGAIN_TRIES = 20
