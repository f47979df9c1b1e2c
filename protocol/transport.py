"""ZeroMQ socket set-up, the same for every peer, and the routing identities that name them.

Why these options: the coordinator's ROUTER must never block or drop on a slow peer (HWM 0 =
unlimited; the ack/retry layer above bounds what is in flight), must not fail a send to an M
that has just died (ROUTER_MANDATORY off: the message is dropped, the M is reaped and fenced
elsewhere), and must not hang on exit (LINGER 0). A DEALER queues to its ROUTER even before
the connection is up (IMMEDIATE off), so an M can say hello the moment it starts.

Local runs talk over an ipc:// socket inside a 0700 run directory: only our user can connect.

A peer's routing identity is its name on the wire: ``m<m>.<epoch>`` for an M incarnation,
``agent:<host>`` for a host agent. ``parse_identity`` accepts only the canonical spelling, so
one peer has exactly one identity (``m01.0`` cannot pose as ``m1.0``).
"""

import os
import re
import tempfile

import zmq

from protocol.codec import ProtocolError
from protocol.messages import INT64_MAX, show

SOCKET_NAME = "sched.sock"
_MAX_IDENTITY_BYTES = 255  # ZeroMQ's limit on a routing id
_AGENT_PREFIX = b"agent:"
_M_IDENTITY = re.compile(rb"m(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})")


def make_rundir(base: str | None = None) -> str:
    """Create a private (0700) run directory ``gmpsim-*`` under ``base`` (default: tmp)."""
    rundir = tempfile.mkdtemp(prefix="gmpsim-", dir=base)
    os.chmod(rundir, 0o700)  # mkdtemp already does; say it where it matters
    return rundir


def rundir_endpoint(rundir: str) -> str:
    """The coordinator's endpoint for a local run: ``ipc://<rundir>/sched.sock``."""
    return f"ipc://{os.path.join(rundir, SOCKET_NAME)}"


def _unlimited(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """The coordinator's ROUTER, bound to ``endpoint``; an ipc socket file is made 0600."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        _unlimited(sock)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # No ROUTER_HANDOVER: a peer claiming a connected identity is refused, never lets it take
        # over. (So every incarnation has its own identity: m<id>.<epoch>, agent:<host>/<pid>.)
        sock.bind(endpoint)
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if bound.startswith("ipc://") and not bound.startswith("ipc://@"):  # @: abstract, no file
            os.chmod(bound[len("ipc://"):], 0o600)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def dealer(ctx: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    """An M's or agent's DEALER, named ``identity``, connected to ``endpoint``."""
    sock = ctx.socket(zmq.DEALER)
    try:
        _unlimited(sock)
        sock.setsockopt(zmq.IMMEDIATE, 0)
        sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.connect(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def m_identity(m: int, epoch: int) -> bytes:
    """The routing identity of incarnation ``epoch`` of M ``m``: ``b"m<m>.<epoch>"``."""
    for name, value in (("m", m), ("epoch", epoch)):
        if type(value) is not int or not 0 <= value <= INT64_MAX:
            raise ValueError(f"m_identity: {name} must be an int >= 0, got {show(value)}")
    return b"m%d.%d" % (m, epoch)


def agent_identity(host: str) -> bytes:
    """The routing identity of the host agent on ``host``: ``b"agent:<host>"``."""
    identity = _AGENT_PREFIX + host.encode("utf-8") if type(host) is str and host else b""
    if not identity or len(identity) > _MAX_IDENTITY_BYTES:
        raise ValueError(f"agent_identity: host must be a non-empty str of <= "
                         f"{_MAX_IDENTITY_BYTES - len(_AGENT_PREFIX)} UTF-8 bytes, got {show(host)}")
    return identity


def parse_identity(identity: bytes) -> tuple[str, int, int] | tuple[str, str]:
    """``("m", m, epoch)`` or ``("agent", host)``; ProtocolError for anything else."""
    if type(identity) is bytes and len(identity) <= _MAX_IDENTITY_BYTES:
        match = _M_IDENTITY.fullmatch(identity)
        if match:
            m, epoch = int(match[1]), int(match[2])
            if m <= INT64_MAX and epoch <= INT64_MAX:
                return ("m", m, epoch)
        elif identity.startswith(_AGENT_PREFIX) and len(identity) > len(_AGENT_PREFIX):
            try:
                return ("agent", identity[len(_AGENT_PREFIX):].decode("utf-8"))
            except UnicodeDecodeError:
                pass
    raise ProtocolError(f"unknown peer identity {show(identity)}")
