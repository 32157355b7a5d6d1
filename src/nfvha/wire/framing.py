"""Framing and the base layer (docs/protocol.md §Framing, §Base layer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_LINE = 8192
APPS = ("base", "heartbeat", "server_group")


class ProtocolError(Exception):
    """A frame or message that breaks the protocol.

    `reason` is a short stable code, used as the key of per-instance error counters;
    `nack` says whether the spec asks the receiver to answer with a `nack`.
    """

    def __init__(self, reason: str, detail: str, *, app: str = "base", msg_type: str = "", nack: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.app = app
        self.msg_type = msg_type
        self.nack = nack


@dataclass(frozen=True)
class Frame:
    app: str
    data: dict[str, Any]
    seq: int = 0
    version: int = VERSION

    @property
    def msg_type(self) -> str:
        return self.data["msg_type"]


def encode(frame: Frame) -> bytes:
    """A frame on the wire: a leading newline ends any half-written frame of an earlier
    incarnation; json escapes control characters, so no raw newline is inside."""
    body = {"version": frame.version, "app": frame.app, "seq": frame.seq, "data": frame.data}
    return b"\n" + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class LineDecoder:
    """Splits a byte stream into lines of at most `max_line` bytes.

    A longer line yields one ProtocolError and is discarded up to the next newline; the
    buffer never holds more than `max_line` bytes, whatever the peer sends.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._tail = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        out: list[bytes | ProtocolError] = []
        parts = (self._tail + data).split(b"\n")
        self._tail = parts.pop()
        for line in parts:
            if self._discarding:
                self._discarding = False  # the rest of the over-long line
                continue
            if len(line) > self.max_line:
                out.append(_too_long(len(line), self.max_line))
            elif line.strip():
                out.append(line)
        if len(self._tail) > self.max_line:
            if not self._discarding:
                out.append(_too_long(len(self._tail), self.max_line))
                self._discarding = True
            self._tail = b""
        return out


def _too_long(size: int, limit: int) -> ProtocolError:
    return ProtocolError("too_long", f"line of {size}+ bytes exceeds {limit}")


def parse_frame(line: bytes) -> Frame:
    """Validate the base layer of one line; raise ProtocolError naming what is wrong."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", f"frame is a JSON {type(obj).__name__}, not an object")
    for name, kind in (("version", int), ("app", str), ("seq", int), ("data", dict)):
        if name not in obj:
            raise ProtocolError("missing_field", f"frame lacks '{name}'")
        value = obj[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError("bad_field", f"'{name}' must be {kind.__name__}, got {type(value).__name__}")
    data = obj["data"]
    msg_type = data.get("msg_type")
    if not isinstance(msg_type, str):
        raise ProtocolError("missing_field", "data lacks a string 'msg_type'")
    if obj["version"] != VERSION:
        raise ProtocolError("bad_version", f"version {obj['version']} not supported (speaks {VERSION})",
                            msg_type=msg_type, nack=True)
    if obj["app"] not in APPS:
        raise ProtocolError("unknown_app", f"unknown app '{obj['app'][:32]}'", msg_type=msg_type, nack=True)
    return Frame(app=obj["app"], data=data, seq=obj["seq"], version=obj["version"])


class FrameWriter:
    """Stamps the per-sender sequence number and encodes."""

    def __init__(self) -> None:
        self.seq = 0

    def pack(self, app: str, data: dict[str, Any]) -> bytes:
        self.seq += 1
        return encode(Frame(app=app, data=data, seq=self.seq))

    def nack(self, err: ProtocolError) -> bytes:
        data = {"msg_type": "nack", "log_msg": err.detail[:224]}
        if err.msg_type:
            data["orig_msg_type"] = err.msg_type[:64]
        return self.pack(err.app, data)
