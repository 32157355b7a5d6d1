"""Message tables: each application's messages are small frozen dataclasses whose field
metadata is the validation rule, checked by one `parse` for every application."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from .framing import ProtocolError


def str_field(max_len: int, choices: tuple[str, ...] = (), max_bytes: int | None = None) -> dict[str, Any]:
    return {"kind": str, "max_len": max_len, "choices": choices, "max_bytes": max_bytes}


def int_field(lo: int, hi: int) -> dict[str, Any]:
    return {"kind": int, "lo": lo, "hi": hi}


def obj_field(keys: tuple[str, ...], max_len: int = 255) -> dict[str, Any]:
    """An object of known keys whose values are short strings (or null)."""
    return {"kind": dict, "keys": keys, "max_len": max_len}


class Table:
    """The messages of one application, by (msg_type, sender)."""

    def __init__(self, app: str, *classes: type[Any]) -> None:
        self.app = app
        self.by_type: dict[tuple[str, str], type[Any]] = {}
        for cls in classes:
            cls.app = app  # the frame a message travels in
            for sender in ("guest", "host") if cls.direction == "either" else (cls.direction,):
                self.by_type[(cls.msg_type, sender)] = cls
        self.types = {cls.msg_type for cls in classes}

    def parse(self, data: dict[str, Any], sender: str) -> Any:
        """Build a message from a frame's `data`, checking every field against its rule.

        `sender` is "guest" or "host": a message that only the other side may send is refused.
        """
        msg_type = data.get("msg_type")
        if msg_type not in self.types:
            raise ProtocolError("unknown_msg_type", f"unknown {self.app} msg_type '{str(msg_type)[:32]}'",
                                app=self.app, msg_type=str(msg_type)[:64], nack=True)
        cls = self.by_type.get((msg_type, sender))
        if cls is None:
            raise ProtocolError("wrong_direction", f"'{msg_type}' is not sent by the {sender}",
                                app=self.app, msg_type=msg_type)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING:
                    raise ProtocolError("missing_field", f"{msg_type} lacks '{f.name}'", app=self.app,
                                        msg_type=msg_type)
                continue
            values[f.name] = self._check(msg_type, f.name, data[f.name], f.metadata)
        return cls(**values)

    def _check(self, msg_type: str, name: str, value: Any, rule: Any) -> Any:
        def bad(why: str) -> ProtocolError:
            return ProtocolError("bad_field", f"{msg_type}.{name} {why}", app=self.app, msg_type=msg_type)

        kind = rule["kind"]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"must be {kind.__name__}, got {type(value).__name__}")
        if kind is int and not rule["lo"] <= value <= rule["hi"]:
            raise bad(f"must be in [{rule['lo']}, {rule['hi']}], got {value}")
        if kind is str:
            if rule["max_bytes"] is not None and len(value.encode("utf-8", "surrogatepass")) > rule["max_bytes"]:
                raise ProtocolError("oversized", f"{msg_type}.{name} is longer than {rule['max_bytes']} bytes "
                                    "in UTF-8", app=self.app, msg_type=msg_type, nack=True)
            if len(value) > rule["max_len"]:
                raise bad(f"longer than {rule['max_len']} characters")
            if rule["choices"] and value not in rule["choices"]:
                raise bad(f"must be one of {', '.join(rule['choices'])}, got '{value[:32]}'")
        if kind is dict:
            extra = [k for k in value if k not in rule["keys"]]
            if extra:
                raise bad(f"has unknown keys {', '.join(str(k)[:32] for k in extra[:3])}")
            for k, v in value.items():
                if v is not None and (not isinstance(v, str) or len(v) > rule["max_len"]):
                    raise bad(f"'{k}' must be a string of at most {rule['max_len']} characters")
        return value


def to_data(msg: Any) -> dict[str, Any]:
    data = {"msg_type": msg.msg_type}
    for f in fields(msg):
        data[f.name] = getattr(msg, f.name)
    return data
