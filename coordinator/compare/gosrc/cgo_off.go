//go:build !cgo

package main

const isCgo = false

// cgoCall without a C toolchain: the nearest is a blocking syscall (no cgocall, no extra M).
func cgoCall(us int64) { blockingSyscall(us) }
