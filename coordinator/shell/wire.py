"""The coordinator's ROUTER socket: receiving [identity, frame], sending (through the message
faults), the identity each M is reached at, and the sparse log of bad frames."""
from __future__ import annotations

import logging
import os

import zmq

from protocol.codec import encode, encode_trusted
from protocol.transport import m_identity

log = logging.getLogger("gmpsim.coordinator")

LOG_FIRST_BAD, LOG_EVERY_BAD = 20, 1000  # a flood of bad frames is logged sparsely
_SNDMORE = int(zmq.SNDMORE)  # a plain int: pyzmq's enum arithmetic costs µs per send
TRUSTED_ENCODE = os.environ.get("GMPSIM_CHECK_OUTGOING", "") == ""  # tests set it: every frame checked


class Wire:
    """Frames in and out of one ROUTER socket. `faults` (an Injector, set once made) sees every
    message send() sends when the plan has message faults; raw_send() goes straight out."""

    def __init__(self, sock, rec):
        self.sock = sock
        self.rec = rec  # counts bad frames
        self.faults = None
        self.trusted = TRUSTED_ENCODE
        self.seq = 0
        self.m_ident: dict[int, bytes] = {}  # M id -> the identity of its last message
        self.spare_bound: dict[bytes, tuple[int, int]] = {}  # a spare's identity -> the (M, epoch) its hello named

    def raw_send(self, identity: bytes, frame: bytes) -> None:
        try:
            self.sock.send(identity, _SNDMORE)
            self.sock.send(frame)
        except zmq.ZMQError as e:
            log.warning("send to %r failed: %s", identity, e)

    def send(self, identity: bytes, t: str, **fields) -> bytes:
        """Encode and send through the message faults; returns the frame (for resends). Our own
        messages are packed unchecked here (the hot path); the test suite validates every kind."""
        self.seq += 1
        frame = encode_trusted(t, self.seq, 0, fields) if self.trusted else encode(t, self.seq, 0, **fields)
        if self.faults is not None and self.faults.plan.has_message_faults:
            self.faults.outbound(t, identity, frame)
        else:
            self.raw_send(identity, frame)
        return frame

    def send_direct(self, identity: bytes, t: str, **fields) -> None:
        """Encode (checked) and send past the message faults (shutdowns, heartbeats, welcomes, acks)."""
        self.seq += 1
        self.raw_send(identity, encode(t, self.seq, 0, **fields))

    def recv(self) -> tuple[bytes, bytes | None]:
        parts = self.sock.recv_multipart()
        if len(parts) != 2:
            self.bad_frame(parts[0] if parts else b"", "not a [identity, frame] message")
            return (parts[0] if parts else b""), None
        return parts[0], parts[1]

    def bad_frame(self, ident: bytes, why) -> None:
        self.rec.bad_frames += 1
        n = self.rec.bad_frames
        if n <= LOG_FIRST_BAD or n % LOG_EVERY_BAD == 0:
            log.warning("dropped a bad frame from %r (%d so far): %s", ident[:32], n, why)

    def m_identity_of(self, sched, mid: int) -> bytes:
        """Where M mid is reached: the identity of its last message, else its incarnation's."""
        if mid in self.m_ident:
            return self.m_ident[mid]
        gone = (*sched.freem, *sched.osstackm)
        mp = sched.allm.get(mid) or next((m for m in gone if m.id == mid), None)
        return m_identity(mid, mp.epoch if mp is not None else 1)
