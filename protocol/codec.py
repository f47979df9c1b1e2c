"""msgpack framing of the catalogue in ``messages.py``, with strict validation both ways.

Why strict: ``decode`` sits on the coordinator's hot path and its input comes from other
processes (or, across hosts, other machines). A bad frame must become one ``ProtocolError``
that the event loop logs and drops — never a ``KeyError`` deep inside the scheduler. ``encode``
applies the same rules, so a bug in our own sender fails loudly where it is made.
"""

import msgpack

from protocol.messages import MESSAGES, NAT, VERSION, FieldError, describe, record, show

MAX_FRAME_BYTES = 1 << 20  # 1 MiB: far above any real message; bounds what a peer can make us parse

# Bounds for the unpacker (the frame limit already bounds these; they stop a small frame that
# declares a huge container before we have looked at anything).
_MAX_ARRAY_ITEMS = 100_000  # the longest list in the catalogue: a compiled program
_MAX_MAP_KEYS = 10_000      # the largest map: programs by name

# One validator per message type: the envelope's seq/epoch and the typed fields, nothing else.
_VALIDATORS = {
    t: record(t, {"seq": NAT, "epoch": NAT, **fields}, preset=("v", "t")).check
    for t, fields in MESSAGES.items()
}


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol. ``str()`` is one line naming what was
    wrong; ``msg_type`` and ``field`` (e.g. ``"pos.pc"``) are set when known."""

    def __init__(self, problem: str, *, msg_type: str | None = None, field: str | None = None):
        super().__init__("protocol: " + " ".join(problem.split()))
        self.msg_type = msg_type
        self.field = field


def _brief(exc: Exception) -> str:
    """An exception as ``Type: text``, text cut short (it may quote peer-supplied bytes)."""
    text = " ".join(str(exc).split())
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _validate(msg) -> dict:
    """The checked (and normalised) message, or ProtocolError."""
    if type(msg) is not dict:
        raise ProtocolError(f"not a message: expected map, got {describe(msg)}")
    v = msg.get("v")
    if type(v) is not int or v != VERSION:
        if "v" not in msg:
            raise ProtocolError("missing version field 'v'", field="v")
        raise ProtocolError(f"unsupported version {show(v)} (expected {VERSION})", field="v")
    t = msg.get("t")
    validate = _VALIDATORS.get(t) if type(t) is str else None
    if validate is None:
        if "t" not in msg:
            raise ProtocolError("missing type field 't'", field="t")
        raise ProtocolError(f"unknown type {show(t)}", field="t")
    try:
        return validate(msg)
    except FieldError as err:
        field = err.path[1:]  # drop the leading "."
        raise ProtocolError(f"field '{field}' of '{t}': {err.problem}",
                            msg_type=t, field=field) from None


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict:
    """Unpack and validate one frame. Returns the message (envelope included, floats as float).
    Raises ProtocolError — and nothing else — on any fault."""
    try:
        size = len(frame)
    except TypeError:
        raise ProtocolError(f"not msgpack: expected bytes, got {type(frame).__name__}") from None
    if size > max_bytes:
        raise ProtocolError(f"frame too large ({size} bytes > {max_bytes})")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True,
                              max_str_len=max_bytes, max_bin_len=max_bytes,
                              max_array_len=_MAX_ARRAY_ITEMS, max_map_len=_MAX_MAP_KEYS,
                              max_ext_len=0)
    except Exception as exc:  # msgpack raises ValueError, TypeError, ExtraData, StackError...
        raise ProtocolError(f"not msgpack: {_brief(exc)}") from exc
    return _validate(msg)


def encode(t: str, seq: int, epoch: int = 0, **fields) -> bytes:
    """Validate and pack one message of type ``t``. Raises ProtocolError if it breaks the
    protocol (that is a bug in the caller: it must fail loudly, not reach a peer)."""
    if "v" in fields:
        raise ProtocolError(f"field 'v' of {show(t)}: reserved for the envelope",
                            msg_type=t, field="v")
    msg = _validate({"v": VERSION, "t": t, "seq": seq, "epoch": epoch, **fields})
    try:
        frame = msgpack.packb(msg, use_bin_type=True)
    except Exception as exc:  # e.g. a config value msgpack cannot represent
        raise ProtocolError(f"message '{t}' is not packable: {_brief(exc)}", msg_type=t) from exc
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame too large ({len(frame)} bytes > {MAX_FRAME_BYTES})", msg_type=t)
    return frame


_packb = msgpack.Packer(use_bin_type=True).pack


def encode_trusted(t: str, seq: int, epoch: int, fields: dict) -> bytes:
    """Pack a message built by code whose messages the tests validate (the coordinator's hot
    replies): no per-field check. Everything from a peer still goes through decode's checks."""
    fields["v"], fields["t"], fields["seq"], fields["epoch"] = VERSION, t, seq, epoch
    return _packb(fields)


__all__ = ["MAX_FRAME_BYTES", "ProtocolError", "decode", "encode", "encode_trusted"]
