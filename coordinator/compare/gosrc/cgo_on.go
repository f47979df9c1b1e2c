//go:build cgo

package main

/*
#include <unistd.h>
static void gmpsim_cgo_sleep(long us) { usleep(us); }
*/
import "C"

// isCgo: this binary is a real cgo binary (template thread, newextram's extra M).
const isCgo = true

// cgoCall is a real cgo call (cgocall: entersyscall ... exitsyscall) into C that sleeps.
func cgoCall(us int64) { C.gmpsim_cgo_sleep(C.long(us)) }
