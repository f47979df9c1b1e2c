//go:build !amd64

package sched

// Addr: no assembly for this architecture; the counts are reported as unavailable.
func Addr() uintptr { return 0 }
