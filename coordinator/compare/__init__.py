"""`gmpsim compare`: the same scenario on the real Go toolchain and on gmpsim, side by side.

gosrc/      the Go program: one interpreter of gmpsim's op vocabulary (shipped as package data)
gobuild.py  finds `go`, builds gosrc/ once into a cache keyed by source + `go version`
gorun.py    one real-Go run, sampled from outside (/proc), exact counts from runtime.sched
simrun.py   one gmpsim run (`gmpsim run ... --set faults=[]`), read from report.json
table.py    medians, ranges, the tolerance rule, the printed table, the README row
compare.py  the command: validate, build, run both N times, print, exit 0/1/2
"""
