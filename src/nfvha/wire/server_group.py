"""Application `server_group` (docs/protocol.md §Application server_group): best-effort,
low-bandwidth datagrams between the members of a server group, through the platform.

The host end checks what a guest sends and turns it into events for the agent, which
routes them through the controller; the platform stamps `source_instance` itself and a
guest that tries to set it is refused. The guest end turns what the platform delivers
into events for the guest daemon's library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .framing import ProtocolError
from .messages import Table, int_field, obj_field, str_field

MAX_DATA_BYTES = 3050
INSTANCE_KEYS = ("id", "name", "state", "host", "updated_at")
U32 = 2**32


@dataclass(frozen=True)
class Broadcast:
    msg_type: ClassVar[str] = "broadcast"
    direction: ClassVar[str] = "guest"
    data: str = field(metadata=str_field(MAX_DATA_BYTES, max_bytes=MAX_DATA_BYTES))


@dataclass(frozen=True)
class BroadcastDelivery:
    msg_type: ClassVar[str] = "broadcast"
    direction: ClassVar[str] = "host"
    data: str = field(metadata=str_field(MAX_DATA_BYTES, max_bytes=MAX_DATA_BYTES))
    source_instance: str = field(metadata=str_field(64))


@dataclass(frozen=True)
class StatusQuery:
    msg_type: ClassVar[str] = "status_query"
    direction: ClassVar[str] = "guest"
    seq: int = field(metadata=int_field(0, U32 - 1))


@dataclass(frozen=True)
class StatusResponse:
    msg_type: ClassVar[str] = "status_response"
    direction: ClassVar[str] = "host"
    seq: int = field(metadata=int_field(0, U32 - 1))
    instance: dict = field(metadata=obj_field(INSTANCE_KEYS))


@dataclass(frozen=True)
class StatusResponseDone:
    msg_type: ClassVar[str] = "status_response_done"
    direction: ClassVar[str] = "host"
    seq: int = field(metadata=int_field(0, U32 - 1))


@dataclass(frozen=True)
class Notification:
    msg_type: ClassVar[str] = "notification"
    direction: ClassVar[str] = "host"
    instance: dict = field(metadata=obj_field(INSTANCE_KEYS))
    timestamp: str = field(metadata=str_field(64))
    event_type: str = field(default="instance.update", metadata=str_field(64, ("instance.update",)))


@dataclass(frozen=True)
class Nack:
    msg_type: ClassVar[str] = "nack"
    direction: ClassVar[str] = "host"
    orig_msg_type: str = field(default="", metadata=str_field(64))
    log_msg: str = field(default="", metadata=str_field(224))


TABLE = Table("server_group", Broadcast, BroadcastDelivery, StatusQuery, StatusResponse, StatusResponseDone,
              Notification, Nack)


def parse(data: dict[str, Any], sender: str) -> Any:
    """Check a `server_group` message; from a guest, one that names its own source is refused."""
    if sender == "guest" and "source_instance" in data:
        raise ProtocolError("forged_source", "the platform stamps source_instance: a guest may not set it",
                            app="server_group", msg_type=str(data.get("msg_type"))[:64], nack=True)
    return TABLE.parse(data, sender)
