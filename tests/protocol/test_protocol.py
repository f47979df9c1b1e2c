"""The wire contract: every message type round-trips, every kind of bad frame becomes one
ProtocolError naming the field, fuzzed input never raises anything else, and the socket
helpers really carry messages between a ROUTER and a DEALER over ipc://."""

import math
import os
import shutil
import stat

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import MAX_FRAME_BYTES, ProtocolError, decode, encode
from protocol.messages import MESSAGES, TYPES, VERSION, fork_spec, position
from protocol.throw import Throw
from protocol.transport import (
    agent_identity,
    dealer,
    m_identity,
    make_rundir,
    parse_identity,
    router,
    rundir_endpoint,
    spare_identity,
)

POS = position(pc=3, loops=[2, 0], left=5)
FORK = fork_spec(m=2, nextp=1, spinning=True, slot=4, epoch=1, ts=12.5)
TEMPLATE_FORK = fork_spec(m=5, nextp=-1, slot=0, epoch=0, ts=0.25, template=True)

# A valid instance of every message type (the test below checks none is missing).
SAMPLES = {
    "hello": dict(taint="", m=1, pid=4242, host="node-a", started=1.5),
    "woken": dict(m=1, lat=0.0002, slept=0.03),
    "entersyscall": dict(m=1, g=7, pos=POS, cgo=False),
    "exitsyscall": dict(m=1, g=7),
    "entersyscallblock": dict(m=1, g=7, pos=POS),
    "newproc": dict(m=1, g=7, pos=POS, prog="worker", n=10),
    "lockosthread": dict(m=1, g=7, pos=POS),
    "unlockosthread": dict(m=1, g=7, pos=POS),
    "gopark": dict(m=1, g=7, pos=POS, reason="sleep", us=1000),
    "runtime": dict(m=1, g=2, pos=POS, op="gopark", arg="force gc (idle)"),
    "gosched": dict(m=1, g=7, pos=POS),
    "goexit": dict(m=1, g=7, pos=dict(pc=3, loops=[], left=0)),
    "forked": dict(m=-1, child=3, cepoch=1, pid=999),
    "forkfail": dict(m=0, child=3, cepoch=1, errno=11, tries=1, cause="fault", limit=""),
    "heartbeat": dict(m=1),
    "execute": dict(re=4, g=7, prog="main", pos=POS, forks=[FORK, TEMPLATE_FORK]),
    "cont": dict(re=4, forks=[]),
    "park": dict(re=4, forks=[FORK]),
    "wake": dict(nextp=0, sent=3.25),
    "preempt": dict(g=7),
    "exit": dict(re=4),
    "shutdown": {},
    "agent_hello": dict(host="node-a", pid=100, arena="/gmpsim-arena", slot_size=65536, slots=64),
    "mexited": dict(m=3, pid=999, status=-9, frames=[dict(depth=0, goid=-1, fn="runtime.mstart", time=1.5, live=True, sp=8128)]),
    "welcome": dict(programs={"main": [["go", "worker", 4], ["exit"]], "worker": []},
                    timescale=100.0, config={"gomaxprocs": 4, "name": "demo", "faults": []}),
    "newosproc": dict(fork=TEMPLATE_FORK),
    "stackfree": dict(slot=4, m=3),
    "watch": dict(m=3, pid=999, slot=2),
    "signal": dict(m=3, pid=999, sig=9),
    "ack": dict(re=17),
    "bye": dict(host="node-a", processes=0, shm_segments=0),
}


def raw(msg_type="gopark", /, **changes):
    """A frame packed directly (bypassing encode's checks): the SAMPLES message of msg_type
    with ``changes`` applied (a value of DROP removes the field)."""
    msg = {"v": VERSION, "t": msg_type, "seq": 0, "epoch": 0, **SAMPLES[msg_type]}
    for key, value in changes.items():
        if value is DROP:
            del msg[key]
        else:
            msg[key] = value
    return msgpack.packb(msg, use_bin_type=True)


DROP = object()


def rejection(frame, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(frame, **kwargs)
    text = str(info.value)
    assert text.startswith("protocol: ") and "\n" not in text
    return info.value


# --- round trips ----------------------------------------------------------------------------

def test_samples_cover_the_catalogue():
    assert set(SAMPLES) == TYPES == set(MESSAGES)


@pytest.mark.parametrize("t", sorted(SAMPLES))
def test_every_type_round_trips(t):
    frame = encode(t, 41, 3, **SAMPLES[t])
    assert decode(frame) == {"v": VERSION, "t": t, "seq": 41, "epoch": 3, **SAMPLES[t]}


def test_ints_sent_as_floats_become_floats_and_inputs_are_not_modified():
    fork = fork_spec(m=1, nextp=0, slot=0, epoch=0, ts=0)
    fork["ts"] = 7  # as a non-Python peer might send it
    msg = decode(encode("park", 0, re=1, forks=[fork]))
    assert msg["forks"][0]["ts"] == 7.0 and type(msg["forks"][0]["ts"]) is float
    assert type(fork["ts"]) is int  # encode copied rather than normalising the caller's dict
    wake = decode(raw("wake", sent=2))
    assert wake["sent"] == 2.0 and type(wake["sent"]) is float


def test_helpers_build_valid_parts():
    assert fork_spec(m=1, nextp=-1, slot=2, epoch=3, ts=1) == {
        "m": 1, "nextp": -1, "spinning": False, "slot": 2, "epoch": 3, "ts": 1.0, "template": False,
        "fail": 0, "retry": False, "delay_us": 0}
    assert position(4, (1, 2), 9) == {"pc": 4, "loops": [1, 2], "left": 9}
    assert decode(encode("gosched", 0, m=0, g=1, pos=position()))["pos"] == position()


# --- rejections -----------------------------------------------------------------------------

BAD_FIELDS = [
    # (frame, field named, words in the message)
    (raw(v=7), "v", "unsupported version 7 (expected 1)"),
    (raw(v=True), "v", "unsupported version True"),
    (raw(v=DROP), "v", "missing version field 'v'"),
    (raw(t="frob"), "t", "unknown type 'frob'"),
    (raw(t=3), "t", "unknown type 3"),
    (raw(t=DROP), "t", "missing type field 't'"),
    (raw(seq=-1), "seq", "field 'seq' of 'gopark': expected int >= 0, got int -1"),
    (raw(epoch=1.0), "epoch", "expected int >= 0, got float 1.0"),
    (raw("hello", pid=DROP), "pid", "field 'pid' of 'hello': missing"),
    (raw("hello", zz=1), "zz", "field 'zz' of 'hello': unknown field"),
    (raw("exit", m=1), "m", "field 'm' of 'exit': unknown field"),
    (raw(pos={"pc": "x", "loops": [], "left": 0}), "pos.pc",
     "field 'pos.pc' of 'gopark': expected int >= 0, got str"),
    (raw(pos={"pc": 1, "loops": []}), "pos.left", "field 'pos.left' of 'gopark': missing"),
    (raw(pos={"pc": 1, "loops": [], "left": 0, "x": 1}), "pos.x", "unknown field"),
    (raw(pos={"pc": 1, "loops": [1, -1], "left": 0}), "pos.loops[1]", "expected int >= 0, got int -1"),
    (raw(pos={"pc": 1, "loops": list(range(65)), "left": 0}), "pos.loops", "got list of 65 items"),
    (raw(pos=[1, [], 0]), "pos", "expected pos map, got list"),
    (raw("execute", forks=[FORK, {**FORK, "spinning": 1}]), "forks[1].spinning",
     "field 'forks[1].spinning' of 'execute': expected bool, got int 1"),
    (raw("execute", forks=[{**FORK, "ts": "now"}]), "forks[0].ts", "expected finite float, got str"),
    (raw("park", forks=FORK), "forks", "expected list of <= 1024 fork spec map, got map"),
    (raw("newosproc", fork={**FORK, "nextp": -2}), "fork.nextp", "expected int >= -1, got int -2"),
    (raw("newosproc", fork={k: v for k, v in FORK.items() if k != "epoch"}), "fork.epoch", "missing"),
    (raw("hello", m=True), "m", "field 'm' of 'hello': expected int, got bool"),
    (raw("hello", m=2**64 - 1), "m", "expected int, got int 18446744073709551615 (beyond 64 bits)"),
    (raw("hello", m=2**63), "m", "expected int, got int 9223372036854775808 (beyond"),
    (raw("hello", m=None), "m", "expected int, got nil"),
    (raw("hello", host="h" * 257), "host", "expected str of <= 256 chars, got str of 257 chars"),
    (raw("hello", host=b"node"), "host", "got bin"),
    (raw("hello", started=True), "started", "expected finite float, got bool"),
    (raw("wake", sent=math.nan), "sent", "expected finite float, got float nan"),
    (raw("wake", sent=-math.inf), "sent", "got float -inf"),
    (raw("newproc", n=0), "n", "expected int in 1..100000, got int 0"),
    (raw("newproc", n=100_001), "n", "expected int in 1..100000"),
    (raw("gopark", us=-5), "us", "expected int in 0..1000000000000"),
    (raw("welcome", programs=[]), "programs", "expected map of <= 10000 str keys, got list"),
    (raw("welcome", programs={"main": {"op": "run"}}), "programs['main']",
     "expected list of <= 100000 items, got map"),
    (raw("welcome", programs={"x" * 300: []}), "programs['xxxx", "expected str of <= 256 chars"),
    (raw("welcome", config={str(i): i for i in range(65)}), "config", "got map of 65 keys"),
    (raw("welcome", config={b"k": 1}), "config[b'k']", "expected str of <= 256 chars, got bin"),
    (raw("welcome", timescale="fast"), "timescale", "expected finite float, got str"),
]


@pytest.mark.parametrize("frame, field, words", BAD_FIELDS)
def test_bad_fields_name_the_field(frame, field, words):
    err = rejection(frame)
    assert err.field is not None and err.field.startswith(field)
    assert words in str(err)


BAD_FRAMES = [
    # (frame, words in the message)
    (b"", "not msgpack"),
    (b"\xc1", "not msgpack"),  # a byte msgpack never uses
    (b"\xff\x00garbage\x13\x37", "not msgpack"),
    (encode("heartbeat", 1, m=1)[:-1], "not msgpack"),  # truncated
    (encode("heartbeat", 1, m=1) + b"\x00", "not msgpack"),  # trailing bytes
    (msgpack.packb([1, 2, 3]), "not a message: expected map, got list"),
    (msgpack.packb("hello"), "not a message: expected map, got str"),
    (msgpack.packb({1: "int key"}), "not msgpack"),  # strict_map_key
    (raw("welcome", config={"x": msgpack.ExtType(5, b"ext")}), "not msgpack"),
    (b"\xdd\xff\xff\xff\xff", "not msgpack"),  # claims a 4-billion-item array
    (b"\x91" * 5000 + b"\x00", "not msgpack"),  # nested deeper than the unpacker allows
]


@pytest.mark.parametrize("frame, words", BAD_FRAMES)
def test_bad_frames_are_rejected(frame, words):
    assert words in str(rejection(frame))


def test_frame_size_limit():
    assert MAX_FRAME_BYTES == 1 << 20
    err = rejection(b"\x00" * (MAX_FRAME_BYTES + 1))
    assert f"frame too large ({MAX_FRAME_BYTES + 1} bytes > {MAX_FRAME_BYTES})" in str(err)
    frame = encode("heartbeat", 0, m=1)
    assert decode(frame, max_bytes=len(frame))["m"] == 1
    assert "frame too large" in str(rejection(frame, max_bytes=len(frame) - 1))


@pytest.mark.parametrize("not_bytes", ["a str", None, 42])
def test_decode_of_a_non_bytes_value(not_bytes):
    assert "not msgpack" in str(rejection(not_bytes))


def test_encode_applies_the_same_rules():
    with pytest.raises(ProtocolError, match="unknown type 'frob'"):
        encode("frob", 0)
    with pytest.raises(ProtocolError, match=r"field 'pos\.loops\[0\]' of 'gosched'"):
        encode("gosched", 0, m=1, g=1, pos=position(0, [-1]))
    with pytest.raises(ProtocolError, match=r"field 'm' of 'forked': .* \(beyond 64 bits\)"):
        encode("forked", 0, m=-(2**63) - 1, child=1, cepoch=1, pid=1)  # msgpack could not even pack it
    with pytest.raises(ProtocolError, match="field 'g' of 'goexit': missing"):
        encode("goexit", 0, m=1)
    with pytest.raises(ProtocolError, match="field 'seq' of 'ack'"):
        encode("ack", -1, re=0)
    with pytest.raises(ProtocolError, match="reserved"):
        encode("ack", 0, re=0, v=2)
    with pytest.raises(ProtocolError, match="not packable"):
        encode("welcome", 0, programs={}, timescale=1.0, config={"x": {1, 2}})
    with pytest.raises(ProtocolError, match="frame too large"):
        encode("welcome", 0, programs={"big": ["x" * 1000] * 2000}, timescale=1.0, config={})


# --- fuzzing --------------------------------------------------------------------------------

def decode_or_reject(frame):
    try:
        return decode(frame)
    except ProtocolError:
        return None


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.sampled_from(["v", "t", "seq", "pc", "m"]),
                      children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_only_ever_raise_protocol_error(frame):
    decode_or_reject(frame)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_random_msgpack_only_ever_raises_protocol_error(value):
    decode_or_reject(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_messages_only_ever_raise_protocol_error(t, data):
    msg = {"v": VERSION, "t": t, "seq": 0, "epoch": 0, **SAMPLES[t]}
    key = data.draw(st.sampled_from(sorted(msg) + ["extra"]))
    msg[key] = data.draw(msgpack_values)
    decode_or_reject(msgpack.packb(msg, use_bin_type=True))
    fields = {k: v for k, v in msg.items() if k not in ("v", "t", "seq", "epoch")}
    try:
        encode(t, 0, **fields)
    except ProtocolError:
        pass


# --- identities -----------------------------------------------------------------------------

@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_m_identity_round_trips(m, epoch):
    assert parse_identity(m_identity(m, epoch)) == ("m", m, epoch)


@given(st.text(min_size=1, max_size=60))
def test_agent_identity_round_trips(host):
    try:
        identity = agent_identity(host)
    except ValueError:  # unencodable (lone surrogates)
        return
    assert parse_identity(identity) == ("agent", host)


@given(st.text(min_size=1, max_size=60), st.integers(1, 2**63 - 1))
def test_spare_identity_round_trips(host, pid):
    try:
        identity = spare_identity(host, pid)
    except ValueError:  # unencodable (lone surrogates)
        return
    assert parse_identity(identity) == ("spare", host, pid)


@pytest.mark.parametrize("junk", [
    b"", b"x", b"m", b"m1", b"m1.", b"m.1", b"m01.0", b"m1.00", b"m-1.0", b"m+1.0", b"m1_0.0",
    b"m1.0 ", b" m1.0", b"m1.0\n", b"m99999999999999999999.0", b"m9223372036854775808.0",
    b"agent:", b"agent", b"agent:\xff", b"Agent:h", b"a" * 300, "m1.0", None,
    b"spare:", b"spare:h", b"spare:h/", b"spare:/1", b"spare:h/0", b"spare:h/01", b"spare:h/-1", b"spare:h/1 ",
    b"spare:\xff/1", b"spare:h/99999999999999999999",
])
def test_parse_identity_rejects_junk(junk):
    with pytest.raises(ProtocolError, match="unknown peer identity"):
        parse_identity(junk)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_parse_identity_only_ever_raises_protocol_error(junk):
    try:
        parse_identity(junk)
    except ProtocolError:
        pass


def test_identity_constructors_refuse_bad_arguments():
    for args in [(-1, 0), (0, -1), (True, 0), (1.0, 0)]:
        with pytest.raises(ValueError):
            m_identity(*args)
    for host in ["", "h" * 250, None]:
        with pytest.raises(ValueError):
            agent_identity(host)
    for host, pid in [("", 1), (None, 1), ("h" * 250, 1), ("h", 0), ("h", -1), ("h", True), ("h", 1.0)]:
        with pytest.raises(ValueError):
            spare_identity(host, pid)


# --- transport over real sockets ------------------------------------------------------------

@pytest.fixture
def rundir():
    path = make_rundir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes any socket a failed test left open, then terms


def test_make_rundir_is_private(rundir, tmp_path):
    assert os.path.basename(rundir).startswith("gmpsim-")
    assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700
    inside = make_rundir(base=str(tmp_path))
    assert os.path.dirname(inside) == str(tmp_path)
    assert stat.S_IMODE(os.stat(inside).st_mode) == 0o700
    assert rundir_endpoint("/run/x") == "ipc:///run/x/sched.sock"


def test_router_dealer_exchange_over_ipc(rundir, ctx):
    endpoint = rundir_endpoint(rundir)
    server = router(ctx, endpoint)
    m_sock = dealer(ctx, endpoint, m_identity(3, 1))
    agent_sock = dealer(ctx, endpoint, agent_identity("node-a"))
    try:
        assert stat.S_IMODE(os.stat(os.path.join(rundir, "sched.sock")).st_mode) == 0o600
        for sock in (server, m_sock, agent_sock):
            assert sock.getsockopt(zmq.LINGER) == 0
            assert sock.getsockopt(zmq.SNDHWM) == sock.getsockopt(zmq.RCVHWM) == 0
        assert m_sock.getsockopt(zmq.IMMEDIATE) == 0

        m_sock.send(encode("hello", 0, epoch=1, **SAMPLES["hello"]))
        agent_sock.send(encode("agent_hello", 0, **SAMPLES["agent_hello"]))
        heard = {}
        for _ in range(2):
            assert server.poll(5000), "nothing reached the ROUTER"
            identity, frame = server.recv_multipart()
            heard[parse_identity(identity)] = (identity, decode(frame))
        assert heard[("m", 3, 1)][1]["t"] == "hello" and heard[("m", 3, 1)][1]["epoch"] == 1
        assert heard[("agent", "node-a")][1]["t"] == "agent_hello"

        server.send_multipart([heard[("m", 3, 1)][0], encode("wake", 1, nextp=0, sent=2.5)])
        server.send_multipart([m_identity(99, 0), encode("exit", 2, re=1)])  # unknown peer: dropped
        assert m_sock.poll(5000), "the reply did not reach the DEALER"
        reply = decode(m_sock.recv())
        assert (reply["t"], reply["nextp"], reply["sent"]) == ("wake", 0, 2.5)
    finally:
        for sock in (server, m_sock, agent_sock):
            sock.close(linger=0)


# --- throw ----------------------------------------------------------------------------------

def test_throw_lines_are_what_go_prints():
    err = Throw("thread exhaustion", prints=("runtime: program exceeds 10-thread limit",))
    assert isinstance(err, Exception) and err.message == "thread exhaustion"
    assert err.lines() == ["runtime: program exceeds 10-thread limit",
                           "fatal error: thread exhaustion"]
    assert Throw("stopm holding locks").lines() == ["fatal error: stopm holding locks"]
    assert Throw("x", prints="one line").prints == ("one line",)
