package sched

// Addr returns &runtime.sched (sched_amd64.s).
func Addr() uintptr
