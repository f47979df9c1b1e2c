"""g0 stacks in a real shared-memory arena, written by real forked processes."""

import contextlib
import itertools
import os
import signal
import struct
import time

import pytest

from coordinator.shell.procfs import children
from protocol.throw import Throw
from tests.forking import fork_child, read_answer, wait_exit
from worker.g0 import (
    FN_NAME_SIZE,
    FRAME_SIZE,
    G0_STACK_SIZE,
    SHM_DIR,
    STACK_GUARD,
    Arena,
    G0Stack,
    arena_name,
    list_run_segments,
    read_frames,
    unlink_run_segments,
)

RUN = "test"
_names = itertools.count()


def _test_prefix() -> str:
    # gmpsim-test-p<pid>-*: this pytest process's own segments, so a concurrent run on the
    # shared machine can neither fail our leak check nor be failed by it.
    return arena_name(RUN, f"p{os.getpid()}-")


def _children() -> list[int]:
    return children(os.getpid())


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test ends with no gmpsim-test-* segment of ours in /dev/shm and no child left."""
    yield
    prefix = _test_prefix()
    leaked = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    for name in leaked:  # clean up anyway, so one failure does not cascade
        os.unlink(os.path.join(SHM_DIR, name))
    children = _children()
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert leaked == [], f"shared-memory segments left behind: {leaked}"
    assert children == [], f"child processes left behind: {children}"


@pytest.fixture
def arena():
    a = Arena.create(arena_name(RUN, f"p{os.getpid()}-{next(_names)}"), slots=4)
    yield a
    a.close()
    a.unlink()


# --------------------------------------------------------------------------- constants, names


def test_go_constants():
    assert G0_STACK_SIZE == 8192  # Go 1.16 malg(8192 * sys.StackGuardMultiplier)
    assert STACK_GUARD == 928  # Go 1.16 _StackGuard, linux/amd64
    assert FRAME_SIZE == 64


def test_arena_name_is_sanitized_and_unambiguous():
    assert arena_name("r1", "host-a") == "gmpsim-r1-host-a"
    assert arena_name("run-1/x", "h/o st") == "gmpsim-run_1_x-h_o_st"
    # run "a" must not claim the segments of run "a-b"
    assert not arena_name("a-b", "h").startswith(arena_name("a", "h")[:-1])
    with pytest.raises(ValueError):
        arena_name("r", "h" * 300)


# --------------------------------------------------------------------------- arena


def test_arena_create_attach_unlink():
    name = arena_name(RUN, f"p{os.getpid()}-{next(_names)}")
    path = os.path.join(SHM_DIR, name)
    a = Arena.create(name, slots=4, slot_size=G0_STACK_SIZE)
    try:
        assert os.stat(path).st_size == 4 * G0_STACK_SIZE
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
        with pytest.raises(FileExistsError):
            Arena.create(name, slots=1)
        a.buf[100:105] = b"hello"
        with Arena.attach(name) as ro:
            assert (ro.slots, ro.slot_size, ro.readonly) == (4, G0_STACK_SIZE, True)
            assert ro.buf[100:105] == b"hello"
            with pytest.raises(TypeError):
                struct.pack_into("<I", ro.buf, 0, 1)
        with Arena.attach(name, readonly=False) as rw:
            rw.buf[200:202] = b"ok"
        assert a.buf[200:202] == b"ok"
        a.unlink()
        assert not os.path.exists(path)
        a.unlink()  # idempotent
        a.buf[0:1] = b"x"  # the mapping outlives the name
        with pytest.raises(FileNotFoundError):
            Arena.attach(name)
    finally:
        a.close()
        a.unlink()
    a.close()  # idempotent
    assert a.closed


def test_slot_bounds_and_stackfree(arena):
    assert arena.slot_bounds(0) == (0, G0_STACK_SIZE)
    assert arena.slot_bounds(3) == (3 * G0_STACK_SIZE, 4 * G0_STACK_SIZE)
    for bad in (-1, 4):
        with pytest.raises(IndexError):
            arena.slot_bounds(bad)
    lo, hi = arena.slot_bounds(1)
    arena.buf[0:4 * G0_STACK_SIZE] = b"\xab" * (4 * G0_STACK_SIZE)
    arena.stackfree(1)
    assert arena.buf[lo:hi] == bytes(G0_STACK_SIZE)
    assert arena.buf[lo - 1] == 0xAB and arena.buf[hi] == 0xAB  # neighbours untouched


def test_list_run_segments_finds_then_forgets(arena):
    assert arena.name in list_run_segments(RUN)
    assert arena.name not in list_run_segments("other")
    arena.unlink()
    assert arena.name not in list_run_segments(RUN)


def test_unlink_run_segments_removes_a_runs_segments():
    run = f"lost{os.getpid()}"
    names = [arena_name(run, h) for h in ("a", "b")]
    for name in names:
        Arena.create(name, slots=1).close()
    assert list_run_segments(run) == names
    assert unlink_run_segments(run) == names
    assert list_run_segments(run) == []


# --------------------------------------------------------------------------- systemstack


def test_systemstack_pushes_down_from_hi_and_pops(arena):
    g0 = G0Stack(arena, 1)
    lo, hi = arena.slot_bounds(1)
    assert (g0.lo, g0.hi, g0.sp, g0.stackguard0) == (lo, hi, hi, lo + STACK_GUARD)
    t0 = time.monotonic()
    with g0.mstart_frame():
        with g0.systemstack("runtime.schedule", goid=7):
            with g0.systemstack("runtime.newm"):
                assert g0.sp == hi - 3 * FRAME_SIZE
                assert g0.depth == 3
                frames = g0.frames()
                assert [f["fn"] for f in frames] == ["runtime.mstart", "runtime.schedule", "runtime.newm"]
                assert [f["depth"] for f in frames] == [0, 1, 2]
                assert [f["goid"] for f in frames] == [-1, 7, -1]
                assert [f["sp"] for f in frames] == [hi - FRAME_SIZE, hi - 2 * FRAME_SIZE, hi - 3 * FRAME_SIZE]
                assert all(f["live"] for f in frames)
                assert t0 <= frames[0]["time"] <= frames[1]["time"] <= frames[2]["time"] <= time.monotonic()
            assert g0.sp == hi - 2 * FRAME_SIZE
            assert [f["fn"] for f in read_frames(arena, 1)] == ["runtime.mstart", "runtime.schedule"]
            # popped, not erased: only the magic is zeroed
            assert b"runtime.newm" in arena.buf[hi - 3 * FRAME_SIZE:hi - 2 * FRAME_SIZE]
    assert g0.sp == hi and g0.depth == 0
    assert g0.frames() == [] and read_frames(arena, 1) == []


def test_mstart_frame_must_be_the_base(arena):
    g0 = G0Stack(arena, 0)
    with g0.systemstack("runtime.newm"):
        with pytest.raises(Throw):
            g0.mstart_frame()


def test_fn_name_is_truncated_without_splitting_a_character(arena):
    g0 = G0Stack(arena, 0)
    long = "runtime." + "é" * 40
    with g0.systemstack(long):
        fn = g0.frames()[0]["fn"]
    assert len(fn.encode()) <= FN_NAME_SIZE and long.startswith(fn) and len(fn.encode()) >= FN_NAME_SIZE - 1


def test_overflow_throws_morestack_on_g0(arena):
    g0 = G0Stack(arena, 2)
    lo, hi = arena.slot_bounds(2)
    fits = (G0_STACK_SIZE - STACK_GUARD) // FRAME_SIZE  # 113 frames above stackguard0
    with contextlib.ExitStack() as frames:
        for i in range(fits):
            frames.enter_context(g0.systemstack(f"f{i}", goid=i))
        full_sp = hi - fits * FRAME_SIZE
        assert g0.sp == full_sp and full_sp >= lo + STACK_GUARD > full_sp - FRAME_SIZE
        with pytest.raises(Throw) as info:
            with g0.systemstack("runtime.oneTooMany"):
                pass  # pragma: no cover
        throw = info.value
        assert throw.message == "morestack on g0"
        assert throw.prints[0] == (f"runtime: morestack on g0, stack [{hex(lo)} {hex(hi)}], "
                                   f"sp={hex(full_sp)}, called from")
        assert throw.prints[1] == "runtime.oneTooMany(...)"
        assert f"f{fits - 1}(...)" in throw.prints  # traceback, innermost first
        assert throw.lines()[-1] == "fatal error: morestack on g0"
        assert g0.sp == full_sp and g0.depth == fits  # nothing pushed
    assert g0.sp == hi and read_frames(arena, 2) == []
    assert G0Stack(arena, 3).frames() == []  # the neighbour slot was not touched


def test_exception_leaves_unwound_frames_for_the_post_mortem(arena):
    g0 = G0Stack(arena, 0)
    with pytest.raises(RuntimeError):
        with g0.mstart_frame():
            with g0.systemstack("runtime.schedule", goid=3):
                with g0.systemstack("runtime.exitsyscall", goid=3):
                    raise RuntimeError("boom")
    assert g0.sp == g0.hi  # the stack itself is balanced
    assert g0.frames() == []
    dump = read_frames(arena, 0)
    assert [(f["fn"], f["live"]) for f in dump] == [
        ("runtime.mstart", False), ("runtime.schedule", False), ("runtime.exitsyscall", False)]


def test_a_caught_exception_leaves_no_stale_frame_under_new_ones(arena):
    g0 = G0Stack(arena, 0)
    with g0.mstart_frame():
        with contextlib.suppress(RuntimeError):
            with g0.systemstack("a"):
                with g0.systemstack("b"):
                    raise RuntimeError
        assert [(f["fn"], f["live"]) for f in read_frames(arena, 0)] == [
            ("runtime.mstart", True), ("a", False), ("b", False)]
        with g0.systemstack("c"):
            assert [(f["fn"], f["live"]) for f in read_frames(arena, 0)] == [
                ("runtime.mstart", True), ("c", True)]


def test_frames_popped_out_of_order_throw(arena):
    g0 = G0Stack(arena, 0)
    outer, inner = g0.systemstack("outer"), g0.systemstack("inner")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(Throw):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert g0.sp == g0.hi


# --------------------------------------------------------------------------- across processes


def test_forked_m_frames_are_read_by_parent_while_alive_and_after_death(arena):
    """The arena is mapped before fork; the child (an M) writes its g0 slot; the parent
    reads it live, kills the child, and reads the crash dump through a separate mapping."""
    ready_r, ready_w = os.pipe()
    block_r, block_w = os.pipe()
    t0 = time.monotonic()

    def m_process():
        g0 = G0Stack(arena, 2)
        with g0.mstart_frame():
            with g0.systemstack("runtime.schedule", goid=11):
                with g0.systemstack("runtime.newm", goid=11):
                    os.write(ready_w, b"x")
                    os.read(block_r, 1)  # blocks until killed

    pid = fork_child(m_process)
    try:
        os.close(ready_w)
        assert read_answer(ready_r) == b"x"
        alive = read_frames(arena, 2)
        assert [(f["fn"], f["goid"], f["live"]) for f in alive] == [
            ("runtime.mstart", -1, True), ("runtime.schedule", 11, True), ("runtime.newm", 11, True)]
        assert all(t0 <= f["time"] <= time.monotonic() for f in alive)
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid) == -signal.SIGKILL
        with Arena.attach(arena.name) as post_mortem:
            assert read_frames(post_mortem, 2) == alive
            for other in (0, 1, 3):
                lo, hi = post_mortem.slot_bounds(other)
                assert post_mortem.buf[lo:hi] == bytes(G0_STACK_SIZE)
        arena.stackfree(2)  # the next allocm frees the dead M's stack
        assert read_frames(arena, 2) == []
    finally:
        for fd in (ready_r, block_r, block_w):
            os.close(fd)


def test_m_dying_of_a_throw_leaves_its_chain_behind(arena):
    def m_process():
        g0 = G0Stack(arena, 1)
        try:
            with g0.mstart_frame():
                with g0.systemstack("runtime.schedule", goid=5):
                    with contextlib.ExitStack() as stack:
                        for _ in range(1000):  # runaway recursion on g0
                            stack.enter_context(g0.systemstack("runtime.recurse", goid=5))
        except Throw as throw:
            return 2 if throw.message == "morestack on g0" else 3
        return 4

    pid = fork_child(m_process)
    assert wait_exit(pid) == 2
    dump = read_frames(arena, 1)
    fits = (G0_STACK_SIZE - STACK_GUARD) // FRAME_SIZE
    assert len(dump) == fits
    assert [f["fn"] for f in dump[:3]] == ["runtime.mstart", "runtime.schedule", "runtime.recurse"]
    assert not any(f["live"] for f in dump)  # all unwound by the throw
