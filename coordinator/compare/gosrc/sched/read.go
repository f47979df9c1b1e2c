// Package sched reads runtime.sched's M counters (a package of its own: a cgo package may not hold
// Go assembly).
package sched

import (
	"sync/atomic"
	"unsafe"
)

// Read returns runtime.sched.mnext and sched.nmfreed (int64s written under sched.lock), or -1, -1
// where Addr is not available.
func Read() (mnext, nmfreed int64) {
	base := Addr()
	if base == 0 {
		return -1, -1
	}
	mnext = atomic.LoadInt64((*int64)(unsafe.Pointer(base + OffMnext)))
	nmfreed = atomic.LoadInt64((*int64)(unsafe.Pointer(base + OffNmfreed)))
	return mnext, nmfreed
}
