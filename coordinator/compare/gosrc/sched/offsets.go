package sched

// Offsets of schedt.mnext and schedt.nmfreed in runtime.sched. gmpsim rewrites this file at build
// time from $(go env GOROOT)/src/runtime/runtime2.go; these are Go 1.19's on 64-bit.
const (
	OffMnext   = 48
	OffNmfreed = 64
)
