"""g0 stacks in shared memory: the host's stack arena, systemstack, stackfree.

In Go every M has a g0 whose stack (``malg(8192 * sys.StackGuardMultiplier)``
in Go 1.16) is where the runtime runs scheduler code: ``systemstack(fn)``
switches to it. gmpsim gives each M process a g0 stack that is a slot of one
POSIX shared-memory segment per host (the *arena*), so that the stack of an M
outlives the M: when an M process dies, the coordinator maps the arena and
reads that M's last g0 frames -- the crash dump of the thread.

Why one segment cut into slots rather than one segment per stack: a segment
per stack costs 40-70 us and two file descriptors each, which caps a process
at ~10,000 Ms (see FACTS.md); a slot of an arena is a slice.

Why not ``multiprocessing.shared_memory``: on 3.11 it registers every create
and every attach with the resource_tracker, which unlinks the segment when
that process exits. The arena is opened with ``os.open`` under /dev/shm,
mapped once by the host agent *before* it forks, and the file descriptor is
closed at once: forked Ms inherit the mapping with no attach and no tracker.

Frame record layout (``FRAME_SIZE`` = 64 bytes, little endian)::

    magic u32 | depth u32 | goid i64 | time f64 (time.monotonic) | fn utf-8, 40 bytes, NUL padded

The stack grows down from ``hi`` like a real one: the frame of depth ``d``
sits at ``hi - (d + 1) * FRAME_SIZE``. ``time.monotonic`` is CLOCK_MONOTONIC,
one clock for every process on the machine, so the coordinator can compare
frame times across Ms.

Not thread-safe: a G0Stack belongs to one M, used by that M's one thread (as
a g0 belongs to one M in Go). Readers of a live M's slot may see a torn frame;
the post-mortem reader reads a dead M's slot, which nothing writes.
"""

from __future__ import annotations

import mmap
import os
import struct
import time

from protocol.owner import SHM_DIR, arena_name
from protocol.throw import Throw

__all__ = [
    "STACK_GUARD_MULTIPLIER",
    "G0_STACK_SIZE",
    "STACK_GUARD",
    "FRAME_SIZE",
    "FN_NAME_SIZE",
    "SHM_DIR",
    "Arena",
    "G0Stack",
    "arena_name",
    "list_run_segments",
    "unlink_run_segments",
    "read_frames",
]

# sys.StackGuardMultiplier: 1 on a build without the race detector.
STACK_GUARD_MULTIPLIER = 1
# Go 1.16 proc.go, malg for g0: malg(8192 * sys.StackGuardMultiplier).
# (Newer Go uses 16 KiB for g0 on some paths; we follow 1.16.)
G0_STACK_SIZE = 8192 * STACK_GUARD_MULTIPLIER
# Go 1.16 _StackGuard on linux/amd64: 928*sys.StackGuardMultiplier + _StackSystem.
# Go's stackguard0 = stack.lo + _StackGuard; a push below it is a morestack.
STACK_GUARD = 928 * STACK_GUARD_MULTIPLIER


FRAME_SIZE = 64
FN_NAME_SIZE = 40
# A live frame, and a frame left behind by an exception unwinding through it.
FRAME_MAGIC = 0x72663067  # b"g0fr" little endian
FRAME_UNWOUND = 0x77753067  # b"g0uw" little endian

_FRAME = struct.Struct("<IIqd%ds" % FN_NAME_SIZE)
_MAGIC = struct.Struct("<I")
assert _FRAME.size == FRAME_SIZE
# The slot below the top frame is cleared on every push (see _SystemstackFrame);
# that write must stay inside the slot, which holds while the guard >= a frame.
assert STACK_GUARD >= FRAME_SIZE


# --------------------------------------------------------------------------- names


# The names themselves are protocol's (the coordinator counts and sweeps what a run leaves).
def _run_prefix(run_id: str) -> str:
    return arena_name(run_id, "_")[:-1]  # "gmpsim-<run>-"


def list_run_segments(run_id: str) -> list[str]:
    """Names of the /dev/shm segments of this run, sorted (for leak checks)."""
    prefix = _run_prefix(run_id)
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in entries if name.startswith(prefix))


def unlink_run_segments(run_id: str) -> list[str]:
    """Unlink every segment of this run (cleanup after a killed agent); returns their names."""
    removed = []
    for name in list_run_segments(run_id):
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


# --------------------------------------------------------------------------- arena


class Arena:
    """One POSIX shared-memory segment cut into ``slots`` g0 stacks of ``slot_size`` bytes.

    The host agent creates it before forking any M; Ms inherit the mapping.
    Another process (the coordinator's post-mortem reader) attaches by name.
    Slot allocation (which M owns which slot) is allocm's business, not ours.
    """

    __slots__ = ("name", "slots", "slot_size", "size", "readonly", "buf", "_creator")

    def __init__(self, name: str, buf: mmap.mmap, slots: int, slot_size: int,
                 readonly: bool, creator: bool):
        self.name = name
        self.buf = buf
        self.slots = slots
        self.slot_size = slot_size
        self.size = slots * slot_size
        self.readonly = readonly
        self._creator = creator

    @classmethod
    def create(cls, name: str, slots: int, slot_size: int = G0_STACK_SIZE) -> "Arena":
        """Create and map a new segment; FileExistsError if the name is taken."""
        if slots < 1 or slot_size < 1:
            raise ValueError(f"bad arena geometry: slots={slots} slot_size={slot_size}")
        path = _shm_path(name)
        size = slots * slot_size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)  # tmpfs: sparse, pages appear when touched
            buf = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)  # the mapping keeps the memory; nothing to inherit but the mapping
        return cls(name, buf, slots, slot_size, readonly=False, creator=True)

    @classmethod
    def attach(cls, name: str, readonly: bool = True,
               slot_size: int = G0_STACK_SIZE) -> "Arena":
        """Map an existing segment by name (no resource_tracker involved)."""
        fd = os.open(_shm_path(name), os.O_RDONLY if readonly else os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or size % slot_size:
                raise ValueError(f"{name}: size {size} is not a multiple of slot_size {slot_size}")
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            buf = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
        finally:
            os.close(fd)
        return cls(name, buf, size // slot_size, slot_size, readonly=readonly, creator=False)

    def slot_bounds(self, slot: int) -> tuple[int, int]:
        """Go's stack{lo, hi} of a slot, as byte offsets into the arena."""
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range 0..{self.slots - 1}")
        lo = slot * self.slot_size
        return lo, lo + self.slot_size

    def stackfree(self, slot: int) -> None:
        """Go's stackfree: give the slot back clean (zeroed), so no old frame survives reuse."""
        lo, hi = self.slot_bounds(slot)
        self.buf[lo:hi] = bytes(hi - lo)

    def unlink(self) -> None:
        """Remove the /dev/shm name (idempotent). Existing mappings stay valid."""
        try:
            os.unlink(_shm_path(self.name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Unmap (idempotent). Does not unlink: the creator unlinks when the run ends."""
        self.buf.close()

    @property
    def closed(self) -> bool:
        return self.buf.closed

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"Arena({self.name!r}, slots={self.slots}, slot_size={self.slot_size}, {mode})"


def _shm_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad shared-memory name: {name!r}")
    return os.path.join(SHM_DIR, name)


# --------------------------------------------------------------------------- frames


_encoded_names: dict[str, bytes] = {}


def _encode_fn(fn_name: str) -> bytes:
    """utf-8, truncated to FN_NAME_SIZE bytes without splitting a character (cached)."""
    raw = _encoded_names.get(fn_name)
    if raw is None:
        raw = fn_name.encode("utf-8")[:FN_NAME_SIZE].decode("utf-8", "ignore").encode("utf-8")
        if len(_encoded_names) >= 4096:
            _encoded_names.clear()
        _encoded_names[fn_name] = raw
    return raw


def read_frames(arena: Arena, slot: int) -> list[dict]:
    """The frames left in a g0 slot, outermost first (index == depth), innermost last.

    Works from any mapping of the arena: the M's own, an inherited one, or
    ``Arena.attach`` in the coordinator after the M died. Scans down from hi
    while each record has a frame magic and the expected depth; a frame that
    was popped normally has its magic zeroed and ends the scan.

    Each frame: ``{"depth", "goid", "time", "fn", "sp", "live"}``. ``live`` is
    False for a frame an exception unwound through: an M that died of an
    exception inside systemstack leaves its whole chain behind that way, so
    the post-mortem sees where it was even though Python unwound the ``with``
    blocks on its way out. Live frames always come before unwound ones.
    """
    buf = arena.buf
    lo, hi = arena.slot_bounds(slot)
    frames = []
    sp = hi - FRAME_SIZE
    depth = 0
    seen_unwound = False
    while sp >= lo:
        magic, fdepth, goid, when, raw = _FRAME.unpack_from(buf, sp)
        if fdepth != depth or magic not in (FRAME_MAGIC, FRAME_UNWOUND):
            break
        live = magic == FRAME_MAGIC
        if live and seen_unwound:
            break  # not a chain: a live frame cannot sit above an unwound one
        seen_unwound = seen_unwound or not live
        frames.append({
            "depth": fdepth,
            "goid": goid,
            "time": when,
            "fn": raw.rstrip(b"\0").decode("utf-8", "replace"),
            "sp": sp,
            "live": live,
        })
        sp -= FRAME_SIZE
        depth += 1
    return frames


class G0Stack:
    """An M's g0 stack: Go's ``stack{lo, hi}`` with ``sp`` starting at hi, growing down.

    ``lo``/``hi``/``sp``/``stackguard0`` are byte offsets into the arena.
    Creating a G0Stack zeroes the slot (a fresh g0 from malg holds nothing).
    """

    __slots__ = ("arena", "slot", "lo", "hi", "sp", "stackguard0", "_buf")

    def __init__(self, arena: Arena, slot: int):
        self.arena = arena
        self.slot = slot
        self.lo, self.hi = arena.slot_bounds(slot)
        self.sp = self.hi
        # Go: gp.stackguard0 = gp.stack.lo + _StackGuard
        self.stackguard0 = self.lo + STACK_GUARD
        self._buf = arena.buf
        arena.stackfree(slot)

    @property
    def depth(self) -> int:
        """Number of live frames."""
        return (self.hi - self.sp) // FRAME_SIZE

    def systemstack(self, fn_name: str, goid: int = -1) -> "_SystemstackFrame":
        """Go's systemstack(fn), as a context manager: ``with g0.systemstack("runtime.newm"):``.

        Pushes a frame record (fn_name, goid: the G on whose behalf, -1 for
        none; the time) at ``sp - FRAME_SIZE``; pops it on exit (zeroing only
        its magic, so a post-mortem reads live frames only). An exception
        leaving the block marks the frame unwound instead (see read_frames).

        Deliberate difference from Go: Go's systemstack, when already on g0,
        calls fn directly without a switch. We push a frame anyway, so that
        nesting is visible and the post-mortem shows the whole call chain.

        A push that would put sp below stackguard0 raises
        ``Throw("morestack on g0")``: g0 stacks do not grow, in Go or here.
        """
        return _SystemstackFrame(self, fn_name, goid)

    def mstart_frame(self) -> "_SystemstackFrame":
        """The M entry's base frame, "runtime.mstart": ``with g0.mstart_frame(): schedule()``."""
        if self.sp != self.hi:
            raise Throw("mstart: g0 stack not empty",
                        prints=(f"runtime: mstart with sp={hex(self.sp)}, stack hi={hex(self.hi)}",))
        return _SystemstackFrame(self, "runtime.mstart", -1)

    def frames(self) -> list[dict]:
        """Live frames of this stack, outermost first, innermost last."""
        return [f for f in read_frames(self.arena, self.slot) if f["live"]][:self.depth]

    def _morestack(self, fn_name: str) -> Throw:
        """Go's badmorestackg0: print where we were, then throw "morestack on g0".

        Go 1.16 only wrote "fatal: morestack on g0"; newer Go prints the stack
        bounds and a traceback first. We keep the newer wording: the traceback
        lists the live frames innermost first, as Go's does.
        """
        prints = [f"runtime: morestack on g0, stack [{hex(self.lo)} {hex(self.hi)}], "
                  f"sp={hex(self.sp)}, called from",
                  f"{fn_name}(...)",
                  f"\tframe not pushed: needs sp={hex(self.sp - FRAME_SIZE)}, "
                  f"stackguard0={hex(self.stackguard0)}"]
        for frame in reversed(self.frames()):
            prints.append(f"{frame['fn']}(...)")
            prints.append(f"\tsp={hex(frame['sp'])} goid={frame['goid']} depth={frame['depth']}")
        return Throw("morestack on g0", prints=tuple(prints))

    def __repr__(self) -> str:
        return (f"G0Stack(slot={self.slot}, lo={hex(self.lo)}, hi={hex(self.hi)}, "
                f"sp={hex(self.sp)}, depth={self.depth})")


_monotonic = time.monotonic
_pack_frame = _FRAME.pack_into
_pack_magic = _MAGIC.pack_into


class _SystemstackFrame:
    """One systemstack frame: pushed on __enter__, popped on __exit__ (kept small for speed)."""

    __slots__ = ("_stack", "_fn", "_goid", "_sp")

    def __init__(self, stack: G0Stack, fn_name: str, goid: int):
        self._stack = stack
        self._fn = fn_name
        self._goid = goid
        self._sp = -1

    def __enter__(self) -> None:
        stack = self._stack
        sp = stack.sp - FRAME_SIZE
        if sp < stack.stackguard0:
            raise stack._morestack(self._fn)
        buf = stack._buf
        _pack_frame(buf, sp, FRAME_MAGIC, (stack.hi - stack.sp) // FRAME_SIZE,
                    self._goid, _monotonic(), _encode_fn(self._fn))
        # Clear the record below the new top: it may be a stale frame an
        # exception unwound through, which must not read as part of this chain.
        _pack_magic(buf, sp - FRAME_SIZE, 0)
        stack.sp = self._sp = sp

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack = self._stack
        sp = self._sp
        if stack.sp != sp:
            raise Throw("systemstack: frame popped out of order",
                        prints=(f"runtime: popping sp={hex(sp)} but g0 sp={hex(stack.sp)}",))
        _pack_magic(stack._buf, sp, 0 if exc_type is None else FRAME_UNWOUND)
        stack.sp = sp + FRAME_SIZE
        return False
