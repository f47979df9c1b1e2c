"""`gmpsim agent` and `gmpsim keys`, and the checks of a TCP endpoint and its security (CURVE keys,
`--insecure` only on loopback unless forced)."""
from __future__ import annotations

import ipaddress
import os
import re
import sys

import zmq
import zmq.auth

from coordinator.commands import EXIT_BAD_INPUT, EXIT_OK
from protocol.transport import make_keys

_TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/\s]+):(?P<port>[0-9]{1,5})")


_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _tcp_endpoint(endpoint: str) -> tuple[str, int] | str:
    """(host, port) of tcp://HOST:PORT, or the one-line problem with it."""
    found = _TCP.fullmatch(endpoint)
    if not found:
        return f"{endpoint[:80]!r}: expected tcp://ADDR:PORT (e.g. tcp://127.0.0.1:7070)"
    port = int(found["port"])
    if not 1 <= port <= 65535:
        return f"{endpoint[:80]!r}: expected a port from 1 to 65535, got {port}"
    return found["host"].strip("[]"), port


def is_loopback(host: str) -> bool:
    """Does this listen address take connections from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", a name or an interface: reachable from elsewhere


def _check_keys(keys: str, cmd: str) -> str | None:
    mine = "coordinator.key_secret" if cmd == "coordinator" else "agent.key_secret"
    for name in ("coordinator.key", "agent.key", mine):
        path = os.path.join(keys, name)
        if not os.path.exists(path):
            return f"--keys {keys}: no {name} there (make the keys with `gmpsim keys {keys}`)"
        try:
            if os.path.getsize(path) > 64 * 1024:
                raise ValueError("too large")
            public, secret = zmq.auth.load_certificate(path)
            if len(public or b"") != 40 or (name == mine and len(secret or b"") != 40):
                raise ValueError("no 40-character Z85 key in it")
        except Exception as e:  # pyzmq raises ValueError, OSError, UnicodeDecodeError, IndexError...
            return f"--keys {keys}: {name} is not a key file made by `gmpsim keys` ({type(e).__name__})"
    return None


def check_security(args, endpoint: str) -> str | None:
    """Over TCP, CURVE is on unless --insecure says otherwise: a keys directory is required.
    --insecure listens on loopback only, unless --insecure-anywhere says otherwise."""
    where = _tcp_endpoint(endpoint)
    if isinstance(where, str):
        return f"{'--listen' if args.cmd == 'coordinator' else '--connect'} {where}"
    if args.insecure:
        if args.cmd == "coordinator" and not is_loopback(where[0]) and not args.insecure_anywhere:
            return (f"--insecure on {endpoint}, which is not a loopback address: anyone who can reach it "
                    "could steer the run; use --keys DIR, or say --insecure-anywhere")
        return None
    if args.insecure_anywhere:
        return "--insecure-anywhere goes with --insecure"
    if not args.keys:
        return "--keys DIR is required over TCP (CURVE; make them with `gmpsim keys DIR`), or say --insecure"
    return _check_keys(args.keys, args.cmd)


def warn_insecure(args) -> None:
    if args.insecure:
        print("gmpsim: warning: --insecure: no CURVE; any peer that can connect can pose as an agent",
              file=sys.stderr)


def cmd_agent(args) -> int:
    """`gmpsim agent`: the host agent is its own program (python -m worker.agent); this becomes it."""
    err = check_security(args, args.connect)
    if err is None and args.name is None:  # neither --name nor $GMPSIM_AGENT_NAME
        err = "agent: --name is required (or set GMPSIM_AGENT_NAME)"
    if err is None and not _HOST_NAME.fullmatch(args.name):
        err = f"--name {args.name[:40]!r}: expected 1 to 64 of the characters A-Z a-z 0-9 _ . -"
    if err is None and not (0 < args.wait <= 86400):
        err = f"--wait {args.wait:g}: expected seconds from 0 to 86400"
    if err:
        print(f"gmpsim: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    warn_insecure(args)
    argv = [sys.executable, "-m", "worker.agent", "--connect", args.connect, "--name", args.name,
            "--give-up", repr(args.wait)]
    argv += ["--insecure"] if args.insecure else ["--keys", args.keys]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def cmd_keys(args) -> int:
    try:
        written = make_keys(args.dir)
    except OSError as e:
        print(f"gmpsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    return EXIT_OK
