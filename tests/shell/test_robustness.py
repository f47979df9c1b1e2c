"""Robustness with real processes: a coordinator that is flooded with garbage and forgeries runs on as
if nothing happened.

The test starts the real `gmpsim run` as a subprocess (tests/shell/robust_run.py) and finds its
endpoint and run id in its gmpsim.log. The fuzzer is seeded (random.Random(SEED)): a failure replays
with the same frames in the same order (only their interleaving with the run's own messages depends
on timing). A coordinator SIGKILLed: test_robustness_kill.py.
"""
from __future__ import annotations

import json
import os
import random
import re
import time

import msgpack
import pytest
import zmq

from protocol import messages as pm
from protocol.codec import MAX_FRAME_BYTES
from tests.shell.robust_run import run_line, start_run, stop, wait_for

pytestmark = pytest.mark.processes

SEED = 20261127
MIN_FRAMES = 100_000
SEND_BUDGET_S = 20.0


# --- the fuzzer ------------------------------------------------------------------------------------

# Values of every msgpack type, and the edges of every bound in the catalogue.
WRONG = [None, True, False, 0.5, -0.0, float("nan"), float("inf"), float("-inf"), "", "x", "m0", b"", b"\x00\xff",
         [], [1], [None, "a"], {}, {"a": 1}, {"m": 0}, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -(2 ** 63), -1, 0,
         msgpack.ExtType(5, b"ext"), msgpack.ExtType(127, b"\x00\x00\x00\x00")]
VERSIONS = [2, -1, 0, 3, 255, 2 ** 63, -(2 ** 63), "1", 1.0, True, None, [1], b"\x01"]
UNKNOWN_TYPES = ["", "nope", "HELLO", "hello ", "hello\x00", "welcome2", "_from", "v", "ack" * 100, 1, None,
                 True, 1.5, ["hello"], {"t": "hello"}, b"hello"]
# What an M may send (the coordinator's M_TYPES): what the forged Ms send to reach its handlers.
_M_TYPES = pm.M_SENDS


def _int_kind(kind: pm.Kind) -> tuple[int, int] | None:
    e = kind.expected
    if e == "int":
        return pm.INT64_MIN, pm.INT64_MAX
    if m := re.fullmatch(r"int >= (-?\d+)", e):
        return int(m[1]), pm.INT64_MAX
    if m := re.fullmatch(r"int in (-?\d+)\.\.(-?\d+)", e):
        return int(m[1]), int(m[2])
    return None


class Fuzzer:
    """Seeded frames of every kind a confused or hostile peer could send."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.types = sorted(pm.MESSAGES)
        self.kinds = [(w, getattr(self, f"k_{n}")) for n, w in (
            ("random", 22), ("truncated", 10), ("wrong_type", 14), ("bounds", 6), ("version", 5),
            ("unknown_type", 4), ("catalogue", 24), ("forged", 12), ("raw_bombs", 2), ("multipart", 1))]
        self.total_weight = sum(w for w, _ in self.kinds)
        self.made: dict[str, int] = {}
        self.seqs: dict[str, int] = {}  # the last forged seq of each forged M identity

    # values ------------------------------------------------------------------------------------

    def small_int(self) -> int:
        r = self.rng
        return r.choice([0, 1, 2, 3, 7, 9999, r.randint(0, 50), r.randint(-5, 5)])

    def value(self, kind: pm.Kind, depth: int = 0):
        """A value of (mostly) the right type for ``kind``: valid, at an edge, or just off it."""
        r, e = self.rng, kind.expected
        bounds = _int_kind(kind)
        if bounds is not None:
            lo, hi = bounds
            return r.choice([lo, hi, max(lo, 0), min(max(lo, 1), hi), r.randint(lo, hi), self.small_int(),
                             lo - 1 if lo > pm.INT64_MIN else lo, hi + 1 if hi < pm.INT64_MAX else 2 ** 64 - 1])
        if e == "finite float":
            return r.choice([0.0, 1.0, r.random() * 1e6, -r.random(), 1e308, float("nan"), 3])
        if e == "bool":
            return r.random() < 0.5
        if e.startswith("str of <="):
            return r.choice(["local", "", "x" * 256, "x" * 257, "é" * 256, "main", "worker", "nope",
                             "".join(chr(r.randint(32, 0x2FF)) for _ in range(r.randint(0, 40)))])
        if e == "pos map":
            return {"pc": self.small_int(), "loops": [self.small_int() for _ in range(r.choice([0, 1, 3, 64, 65]))],
                    "left": self.small_int()}
        if e == "fork spec map":
            return pm.fork_spec(m=self.small_int(), nextp=r.randint(-1, 5), slot=self.small_int(),
                                epoch=self.small_int(), ts=r.random(), spinning=r.random() < 0.5,
                                template=r.random() < 0.5, fail=r.choice([0, 0, 3]), retry=r.random() < 0.5,
                                delay_us=r.choice([0, 10]))
        if e == "g0 frame map":
            return {"depth": self.small_int(), "goid": self.small_int(), "fn": "runtime.mstart",
                    "time": r.random(), "live": True, "sp": self.small_int()}
        if m := re.fullmatch(r"list of <= (\d+) (.+)", e):
            limit = int(m[1])
            n = r.choice([0, 1, 2, 3]) if depth or r.random() < 0.97 else r.choice([limit, limit + 1])
            item = {"fork spec map": pm.FORK, "g0 frame map": pm.FRAME}.get(m[2], pm.INT)
            if m[2] == "items":
                return [r.choice(["run", 5, None, [1, 2]]) for _ in range(n)]
            return [self.value(item, depth + 1) for _ in range(n)]
        if e.startswith("map of <="):
            return r.choice([{}, {"main": [["run", 5]]}, {"x": 1, "y": None}, {"": []}])
        return r.choice(WRONG)

    def message(self, t: str | None = None, **envelope) -> dict:
        """A message of the catalogue with randomised (mostly well-typed) fields."""
        r = self.rng
        t = t if t is not None else r.choice(self.types)
        msg = {"v": pm.VERSION, "t": t, "seq": r.choice([r.randint(1, 1000), r.randint(0, pm.INT64_MAX), 0, 1]),
               "epoch": r.choice([0, 1, 7, r.randint(0, pm.INT64_MAX)])}
        for name, kind in pm.MESSAGES[t].items():
            msg[name] = self.value(kind)
        msg.update(envelope)
        return msg

    def pack(self, msg) -> bytes:
        try:
            return msgpack.packb(msg, use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            return msgpack.packb(repr(msg)[:2000], use_bin_type=True)

    # kinds of frame ------------------------------------------------------------------------------

    def k_random(self):
        r = self.rng
        return r.randbytes(r.randint(0, 2000))

    def k_truncated(self):
        frame = self.pack(self.message())
        return frame[: self.rng.randrange(len(frame))]

    def k_wrong_type(self):
        r = self.rng
        msg = self.message()
        name = r.choice(list(msg))
        what = r.random()
        if what < 0.7:
            msg[name] = r.choice(WRONG)
        elif what < 0.8:
            del msg[name]
        elif what < 0.9:
            msg[r.choice(["extra", "_from", "V", "", "m "])] = r.choice(WRONG)
        else:
            msg[name.encode()] = msg.pop(name)  # a bin key where a str key belongs
        return self.pack(msg)

    def k_bounds(self):
        r = self.rng
        msg = self.message()
        name = r.choice([n for n in msg if n not in ("v", "t")])
        msg[name] = r.choice([
            2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -(2 ** 63),
            "s" * 256, "s" * 257, "s" * r.randint(1000, 100_000), "\U0001F600" * 257,
            list(range(64)), list(range(65)), list(range(1024)), list(range(1025)),
            [0] * r.choice([100_000, 100_001]) if r.random() < 0.02 else [0] * 5000,
            {str(i): i for i in range(r.choice([64, 65, 10_000 if r.random() < 0.02 else 300]))},
        ])
        return self.pack(msg)

    def k_version(self):
        return self.pack(self.message(v=self.rng.choice(VERSIONS)))

    def k_unknown_type(self):
        msg = self.message()
        msg["t"] = self.rng.choice(UNKNOWN_TYPES)
        return self.pack(msg)

    def k_catalogue(self):
        return self.pack(self.message())

    def k_forged(self):
        """Well-formed messages that pass the codec and claim to be from the sender's identity (so they
        reach the handlers): forged seq/epoch, Ms that do not exist, a forged agent's reports."""
        r = self.rng
        who = r.choice(["m9999", "m0", "agent", "agent"])
        if who == "agent":
            t = r.choice(["agent_hello", *sorted(pm.AGENT_SENDS - {"heartbeat", "bye"})])
            msg = self.message(t, epoch=r.choice([0, 1, r.randint(0, pm.INT64_MAX)]))
            if t == "agent_hello":
                msg.update(host=r.choice(["local", "local", "other"]),
                           pid=r.choice([1, 1, os.getpid(), r.randint(-5, 2 ** 31), r.randint(pm.INT64_MIN, pm.INT64_MAX)]),
                           arena=r.choice(["gmpsim-forged-local", "/etc/passwd", ""]),
                           slots=r.choice([0, 1, 12000, -1, pm.INT64_MAX]), slot_size=r.choice([0, 8192, -1]))
            elif t in ("mexited", "forked", "forkfail"):
                msg.update(m=r.choice([0, -1, 1, 2, 9999]))
                if "child" in msg:
                    msg.update(child=r.choice([0, 1, 2, 9999]), cepoch=r.choice([0, 1, 2]))
            return ("agent", self.pack(msg))
        m, epoch = (9999, 1) if who == "m9999" else (0, 7)
        msg = self.message(r.choice(sorted(_M_TYPES)), epoch=epoch, m=m, seq=self.forged_seq(who))
        return (who, self.pack(msg))

    def forged_seq(self, who: str) -> int:
        """Mostly fresh (so the message reaches the handlers), sometimes a repeat (a duplicate: is
        a cached reply sent to someone else?) or a jump far ahead."""
        r, top = self.rng, self.seqs.get(who, 0)
        x = r.random()
        if x < 0.1 and top:
            return max(0, top - r.randint(0, 5))
        top += r.randint(1, 3) if x < 0.99 else r.randint(1000, 10 ** 6)
        self.seqs[who] = top
        return top

    def k_raw_bombs(self):
        r = self.rng
        return r.choice([
            b"\x91" * 5000 + b"\xc0",                       # arrays nested beyond any stack
            b"\x81\xa1a" * 3000 + b"\xc0",                  # maps nested likewise
            b"\xdd\xff\xff\xff\xff",                        # array32 declaring 4G items
            b"\xdf\xff\xff\xff\xff",                        # map32 declaring 4G keys
            b"\xdb\xff\xff\xff\xff" + b"a" * 10,            # str32 declaring 4 GB
            b"\xc6\x7f\xff\xff\xff",                        # bin32 declaring 2 GB
            b"\xc9\x00\x00\x00\x10\x05" + b"e" * 16,        # ext32
            b"\xa3\xff\xfe\xfd",                            # str that is not UTF-8
            b"\x82\x01\x02\x03\x04",                        # int map keys
            b"\xc1",                                        # the never-used byte
            self.pack(self.message()) + b"\x00",            # extra data after a valid message
            self.pack([self.message()]),                    # a list, not a map
        ])

    def k_multipart(self):
        r = self.rng
        return [self.pack(self.message()) for _ in range(r.randint(2, 3))]

    def huge(self) -> bytes:
        """A frame over the codec's 1 MiB bound: raw bytes, or a valid-looking message."""
        if self.rng.random() < 0.5:
            return self.rng.randbytes(MAX_FRAME_BYTES + self.rng.randint(1, 100_000))
        return self.pack(self.message("hello", host="h" * (MAX_FRAME_BYTES + 10)))

    def frame(self):
        """(target, frame): target is None (any socket) or "m9999" / "m0" / "agent"."""
        x = self.rng.random() * self.total_weight
        make = self.kinds[-1][1]
        for w, kind in self.kinds:
            x -= w
            if x < 0:
                make = kind
                break
        name = make.__name__[2:]
        self.made[name] = self.made.get(name, 0) + 1
        out = make()
        return out if isinstance(out, tuple) else (None, out)


def test_fuzzed_frames_do_not_change_the_run(tmp_path):
    # Made before the run starts (a few seconds of Python): the run (~6 s) must not end before they are sent.
    fuzz = Fuzzer(SEED)
    frames = [fuzz.frame() for _ in range(MIN_FRAMES)]
    for i in fuzz.rng.sample(range(MIN_FRAMES), 6):
        frames[i] = (None, fuzz.huge())
    out = tmp_path / "run"
    proc, console = start_run(out, "--set", "timescale=25")
    ctx = zmq.Context()
    socks: dict[str, zmq.Socket] = {}
    sent = again = replies = 0
    t_send = 0.0
    try:
        run_id, endpoint = wait_for("endpoint in gmpsim.log", lambda: run_line(out), 20, proc)
        for name, ident in (("m9999", b"m9999.1"), ("m0", b"m0.7"), ("agent", b"agent:local/1"),
                            ("junk", b"junk"), ("anon", None), ("binary", b"\x01garbage\xff")):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if ident is not None:
                s.setsockopt(zmq.ROUTING_ID, ident)
            s.connect(endpoint)
            socks[name] = s
        names = sorted(socks)
        rng = fuzz.rng
        t0 = time.monotonic()
        for target, frame in frames:  # as fast as they go: the run (~2 s) must not end first
            if time.monotonic() - t0 >= SEND_BUDGET_S or proc.poll() is not None:
                break
            sock = socks[target] if target is not None else socks[rng.choice(names)]
            while True:
                try:
                    if isinstance(frame, list):
                        sock.send_multipart(frame, zmq.NOBLOCK)
                    else:
                        sock.send(frame, zmq.NOBLOCK)
                    sent += 1
                    break
                except zmq.Again:  # the high-water mark: let the coordinator catch up
                    again += 1
                    if time.monotonic() - t0 >= SEND_BUDGET_S or proc.poll() is not None:
                        break
                    time.sleep(0.001)
            if sent % 2000 == 0:  # the coordinator refuses forged Ms with a shutdown: read them
                for s in socks.values():
                    while s.poll(0):
                        s.recv_multipart()
                        replies += 1
        t_send = time.monotonic() - t0
        code = proc.wait(45)
    finally:
        for s in socks.values():
            s.close(linger=0)
        ctx.term()
        stop(proc)
        console.seek(0)
        tail = console.read()[-3000:]
        console.close()
    assert (out / "report.json").exists(), f"no report (exit code {proc.returncode}):\n{tail}"
    report = json.loads((out / "report.json").read_text())
    proto = report["protocol"]
    print(f"\nfuzz: sent {sent} frames in {t_send:.1f}s (EAGAIN {again}, replies read {replies}); "
          f"kinds {dict(sorted(fuzz.made.items()))}; run {report['wall_s']:.1f}s; protocol {proto}")
    assert sent >= MIN_FRAMES, f"only {sent} frames sent in {SEND_BUDGET_S:g}s (run ended: {proc.returncode})"
    assert code == 0, tail
    assert report["outcome"] == "ok", (report["reason"], report.get("fatal"), tail)
    g = report["goroutines"]
    assert g["completed"] == g["created"] and g["lost"] == 0, g
    assert report["invariants"]["violations"] == []
    assert proto["bad_frames"] > 0
    # The forged agent (agent:local/1) never took the real one's place.
    joined = re.findall(r"host agent (\S+) \(pid (\d+)\) joined", (out / "gmpsim.log").read_text(errors="replace"))
    assert len(joined) == 1 and joined[0][1] != "1", joined
    assert report["leaks"] == {"processes": 0, "shm_segments": 0}

