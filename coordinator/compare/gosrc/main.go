// gmpsim's op vocabulary (protocol/ops.py) run by the real Go runtime: one generic interpreter of a
// scenario's compiled programs, so that `gmpsim compare` can set real Go beside gmpsim.
//
// Usage: gmpsim-go SCENARIO.json. GOMAXPROCS comes from the environment (set by the caller, as
// schedinit reads it); debug.SetMaxThreads(maxmcount) is called first thing in main. At start the
// program writes one line "GMPSIM-GO-SCHED {...}" (the address of runtime.sched and the offsets of
// mnext/nmfreed) to stderr, so a sampler outside can read them through /proc/PID/mem; at the end of
// main it writes one line "GMPSIM-GO-RESULT {...}" with the exact counts. Standard library only.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"gmpsim/compare/sched"
)

type scenario struct {
	Maxmcount int                            `json:"maxmcount"`
	Programs  map[string][][]json.RawMessage `json:"programs"`
}

// op is one compiled instruction: name, a number (µs, count) and a program name or jump target.
type op struct {
	name   string
	n      int64
	target string
	jump   int
}

var programs = map[string][]op{}

func decode(raw [][]json.RawMessage) []op {
	code := make([]op, len(raw))
	for i, ins := range raw {
		var name string
		must(json.Unmarshal(ins[0], &name))
		o := op{name: name}
		switch name {
		case "go":
			must(json.Unmarshal(ins[1], &o.target))
			must(json.Unmarshal(ins[2], &o.n))
		case "rep":
			must(json.Unmarshal(ins[1], &o.n))
			var end int
			must(json.Unmarshal(ins[2], &end))
			o.jump = end
		case "endrep":
			must(json.Unmarshal(ins[1], &o.jump))
		default:
			if len(ins) > 1 {
				must(json.Unmarshal(ins[1], &o.n))
			}
		}
		code[i] = o
	}
	return code
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gmpsim-go:", err)
		os.Exit(2)
	}
}

// advance mirrors protocol.ops.advance: step over rep/endrep until pc points at a real op.
func advance(code []op, pc int, loops []int64) (int, []int64) {
	for pc < len(code) {
		switch o := code[pc]; o.name {
		case "rep":
			if o.n == 0 {
				pc = o.jump
			} else {
				loops = append(loops, o.n)
				pc++
			}
		case "endrep":
			loops[len(loops)-1]--
			if loops[len(loops)-1] > 0 {
				pc = o.jump
			} else {
				loops = loops[:len(loops)-1]
				pc++
			}
		default:
			return pc, loops
		}
	}
	return pc, loops
}

// spin computes for us microseconds, holding its P ("run").
func spin(us int64) {
	end := time.Now().Add(time.Duration(us) * time.Microsecond)
	x := uint64(1)
	for time.Now().Before(end) {
		for i := 0; i < 64; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink += x
}

var sink uint64

// blockingSyscall is a real blocking syscall through syscall.Syscall (entersyscall/exitsyscall):
// nanosleep(us).
func blockingSyscall(us int64) {
	ts := syscall.NsecToTimespec(us * 1000)
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), uintptr(unsafe.Pointer(&ts)), 0)
		if errno != syscall.EINTR { // interrupted (a preemption signal): sleep what is left
			return
		}
	}
}

// run interprets one program; returning from it ends the goroutine (a goroutine still locked to
// its thread then takes the thread with it, as in Go).
func run(name string, isMain bool) {
	code := programs[name]
	var wg sync.WaitGroup
	pc, loops := advance(code, 0, nil)
	for pc < len(code) {
		o := code[pc]
		switch o.name {
		case "run":
			spin(o.n)
		case "syscall", "syscallblock": // user code cannot reach entersyscallblock: see the README
			blockingSyscall(o.n)
		case "cgo":
			cgoCall(o.n)
		case "go":
			target := o.target
			for i := int64(0); i < o.n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					run(target, false)
				}()
			}
		case "lock":
			runtime.LockOSThread()
		case "unlock":
			runtime.UnlockOSThread()
		case "sleep":
			time.Sleep(time.Duration(o.n) * time.Microsecond)
		case "park":
			select {}
		case "wait":
			wg.Wait()
		case "exit":
			if isMain { // gmpsim: main's goexit is main returning (runtime.main calls exit(0))
				return
			}
			runtime.Goexit()
		default: // an op protocol/ops.py has and this program lacks (tests/compare/test_compare.py checks)
			panic("gmpsim compare: op " + o.name + " has no Go twin in main.go")
		}
		pc, loops = advance(code, pc+1, loops)
	}
}

func procThreads() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			n, _ := strconv.ParseInt(strings.TrimSpace(line[len("Threads:"):]), 10, 64)
			return n
		}
	}
	return -1
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	must(err)
	var sc scenario
	must(json.Unmarshal(data, &sc))
	for name, raw := range sc.Programs {
		programs[name] = decode(raw)
	}
	if sc.Maxmcount > 0 {
		debug.SetMaxThreads(sc.Maxmcount)
	}
	fmt.Fprintf(os.Stderr, "GMPSIM-GO-SCHED {\"sched\":%d,\"mnext\":%d,\"nmfreed\":%d,\"cgo\":%v}\n",
		sched.Addr(), sched.OffMnext, sched.OffNmfreed, isCgo)
	t0 := time.Now()
	run("main", true)
	elapsed := time.Since(t0)
	mnext, nmfreed := sched.Read()
	threadcreate := pprof.Lookup("threadcreate").Count()
	// mnext - nmfreed is mcount(); a cgo binary's extra M (newextram) has no thread of its own.
	extra := int64(0)
	if isCgo {
		extra = 1
	}
	// Check the reading against /proc before trusting it: mcount() = mnext - nmfreed must be the
	// process's thread count. An exiting M is counted in nmfreed just before its thread ends, so
	// look again a few times, pausing with a raw nanosleep (no entersyscall: the pause itself can
	// start no M).
	threads, verified, wedged := int64(-1), false, int64(0)
	for try := 0; try < 100 && !verified; try++ {
		if try > 0 {
			ts := syscall.NsecToTimespec(200_000)
			syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		m2, f2 := sched.Read()
		threads = procThreads()
		allm := int64(pprof.Lookup("threadcreate").Count())
		// A locked goroutine that exits on m0 wedges m0 (mexit): counted in nmfreed, kept in allm,
		// its thread alive. That is the one M that may be in allm but not in mcount().
		wedged = allm - (m2 - f2)
		verified = m2 >= 0 && (wedged == 0 || wedged == 1) && threads == m2-f2+wedged-extra
		if verified && m2 == mnext {
			nmfreed = f2
		}
	}
	out, _ := json.Marshal(map[string]interface{}{
		"mnext": mnext, "nmfreed": nmfreed, "threads": threads, "verified": verified,
		"threadcreate": threadcreate, "m0_wedged": wedged == 1, "cgo": isCgo, "extram": extra, "elapsed_us": elapsed.Microseconds(),
		"goversion": runtime.Version(),
	})
	fmt.Fprintf(os.Stderr, "GMPSIM-GO-RESULT %s\n", out)
}
