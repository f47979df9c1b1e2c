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

import ctypes
import os
import re
import tempfile
from dataclasses import dataclass

import zmq
import zmq.auth

from protocol.codec import ProtocolError
from protocol.messages import INT64_MAX, show
from protocol.owner import owner_tag

SOCKET_NAME = "sched.sock"
_MAX_IDENTITY_BYTES = 255  # ZeroMQ's limit on a routing id
_AGENT_PREFIX = b"agent:"
_SPARE_PREFIX = b"spare:"
_PID = re.compile(rb"[1-9][0-9]{0,18}")
_M_IDENTITY = re.compile(rb"m(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})")


def make_rundir(base: str | None = None) -> str:
    """Create a private (0700) run directory ``gmpsim-<pid>_<start>_*`` under ``base`` (default:
    tmp), named after this process so that it can be removed once its owner is dead (owner.py)."""
    rundir = tempfile.mkdtemp(prefix=f"gmpsim-{owner_tag()}_", dir=base)
    os.chmod(rundir, 0o700)  # mkdtemp already does; say it where it matters
    return rundir


def rundir_endpoint(rundir: str) -> str:
    """The coordinator's endpoint for a local run: ``ipc://<rundir>/sched.sock``."""
    return f"ipc://{os.path.join(rundir, SOCKET_NAME)}"


def _unlimited(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


# --- CURVE (across hosts) ------------------------------------------------------------------------
# `gmpsim keys DIR` writes two key pairs in ZeroMQ's certificate format: the coordinator's (the
# server) and the agents' (every agent and every M it forks is a client with that key). Over TCP the
# coordinator accepts only clients whose public key is in DIR (a ZAP handler checks each one).

@dataclass(frozen=True)
class Curve:
    """The keys one side needs: its own pair, and (clients) the server's public key."""
    public: bytes
    secret: bytes
    server_public: bytes | None = None


def _key_file(keys_dir: str, name: str) -> str:
    path = os.path.join(keys_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{keys_dir}: no {name} (make the keys with `gmpsim keys {keys_dir}`)")
    return path


def curve_server_keys(keys_dir: str) -> Curve:
    public, secret = zmq.auth.load_certificate(_key_file(keys_dir, "coordinator.key_secret"))
    return Curve(public, secret)


def curve_client_keys(keys_dir: str) -> Curve:
    public, secret = zmq.auth.load_certificate(_key_file(keys_dir, "agent.key_secret"))
    server_public, _ = zmq.auth.load_certificate(_key_file(keys_dir, "coordinator.key"))
    return Curve(public, secret, server_public)


def make_keys(keys_dir: str) -> list[str]:
    """Write coordinator.key(_secret) and agent.key(_secret) into keys_dir (created 0700 if need be;
    an existing empty directory, such as a volume's mount point, is fine)."""
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    for name in ("coordinator", "agent"):
        for suffix in (".key", ".key_secret"):
            if os.path.exists(os.path.join(keys_dir, name + suffix)):
                raise FileExistsError(f"{keys_dir}: {name + suffix} exists already; not overwriting it")
    written = []
    for name in ("coordinator", "agent"):
        public, secret = zmq.auth.create_certificates(keys_dir, name)
        os.chmod(secret, 0o600)
        written += [public, secret]
    return written


def router(ctx: zmq.Context, endpoint: str, curve: Curve | None = None) -> zmq.Socket:
    """The coordinator's ROUTER, bound to ``endpoint``; an ipc socket file is made 0600. With
    ``curve`` it is a CURVE server (the caller runs the ZAP authenticator that vets clients)."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        _unlimited(sock)
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
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


def dealer(ctx: zmq.Context, endpoint: str, identity: bytes, curve: Curve | None = None) -> zmq.Socket:
    """An M's or agent's DEALER, named ``identity``, connected to ``endpoint`` (as a CURVE client
    when ``curve`` is given)."""
    return dealer_connect(dealer_unconnected(ctx, curve), endpoint, identity)


def dealer_unconnected(ctx: zmq.Context, curve: Curve | None = None) -> zmq.Socket:
    """A DEALER with every option but its name, not yet connected (a spare M makes it ahead)."""
    sock = ctx.socket(zmq.DEALER)
    try:
        _unlimited(sock)
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
        sock.setsockopt(zmq.IMMEDIATE, 0)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def dealer_connect(sock: zmq.Socket, endpoint: str, identity: bytes) -> zmq.Socket:
    """Name a DEALER ``identity`` and connect it to ``endpoint``."""
    try:
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


def spare_identity(host: str, pid: int) -> bytes:
    """The routing identity of a spare M (worker/spare.py), process ``pid`` of ``host``, connected
    before it knows which M it will be: ``b"spare:<host>/<pid>"``. Its hello names the M; the
    coordinator knows the connection as that M's from then on."""
    if type(pid) is not int or not 0 < pid <= INT64_MAX:
        raise ValueError(f"spare_identity: pid must be an int > 0, got {show(pid)}")
    identity = _SPARE_PREFIX + f"{host}/{pid}".encode("utf-8") if type(host) is str and host else b""
    if not identity or len(identity) > _MAX_IDENTITY_BYTES:
        raise ValueError(f"spare_identity: host must be a non-empty str that fits a routing id, got {show(host)}")
    return identity


def agent_identity(host: str) -> bytes:
    """The routing identity of the host agent on ``host``: ``b"agent:<host>"``."""
    identity = _AGENT_PREFIX + host.encode("utf-8") if type(host) is str and host else b""
    if not identity or len(identity) > _MAX_IDENTITY_BYTES:
        raise ValueError(f"agent_identity: host must be a non-empty str of <= "
                         f"{_MAX_IDENTITY_BYTES - len(_AGENT_PREFIX)} UTF-8 bytes, got {show(host)}")
    return identity


def parse_identity(identity: bytes) -> tuple[str, int, int] | tuple[str, str] | tuple[str, str, int]:
    """``("m", m, epoch)``, ``("agent", host)`` or ``("spare", host, pid)``; ProtocolError for
    anything else."""
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
        elif identity.startswith(_SPARE_PREFIX):
            host, _, pid = identity[len(_SPARE_PREFIX):].rpartition(b"/")
            if host and _PID.fullmatch(pid) and int(pid) <= INT64_MAX:
                try:
                    return ("spare", host.decode("utf-8"), int(pid))
                except UnicodeDecodeError:
                    pass
    raise ProtocolError(f"unknown peer identity {show(identity)}")


M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)


def one_malloc_arena() -> None:
    """Every thread of this process and of the processes it forks allocates from the main malloc
    arena: glibc otherwise gives each ZeroMQ thread (I/O, reaper) of every forked M its own arena,
    whose touched pages are that M's alone (MALLOC_ARENA_MAX=1, set at run time, inherited by fork)."""
    ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
