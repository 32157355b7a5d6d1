"""One end of a channel: framing + rate limit + the applications, with error counters.

`HostChannel` is what the agent runs per instance connection; `GuestChannel` is what the
guest daemon runs. Both turn bytes into events and return the bytes to send.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import heartbeat, server_group
from .framing import Frame, FrameWriter, LineDecoder, ProtocolError, parse_frame
from .messages import to_data
from .ratelimit import TokenBucket


@dataclass
class Output:
    data: bytes = b""
    events: list[Any] = field(default_factory=list)


class _End:
    sender = ""  # who sends what this end receives

    def __init__(self) -> None:
        self.decoder = LineDecoder()
        self.writer = FrameWriter()
        self.errors: Counter = Counter()
        self.frames_in = 0

    def _emit(self, step: heartbeat.Step, out: Output) -> Output:
        for msg in step.send:
            out.data += self.writer.pack(msg.app, to_data(msg))
        out.events.extend(step.events)
        return out

    def send(self, *msgs: Any) -> Output:
        """Messages this end sends of its own accord (server-group traffic)."""
        return self._emit(heartbeat.Step(send=list(msgs)), Output())

    def _allow(self, now: float) -> bool:
        return True

    def receive_data(self, data: bytes, now: float) -> Output:
        out = Output()
        for item in self.decoder.feed(data):
            if isinstance(item, ProtocolError):
                self.errors[item.reason] += 1
                continue
            if not self._allow(now):
                self.errors["frame_rate_limited"] += 1
                continue
            try:
                step = self._handle(parse_frame(item), now)
            except ProtocolError as err:
                self.errors[err.reason] += 1
                if err.nack:
                    out.data += self.writer.nack(err)
                continue
            self.frames_in += 1
            self._emit(step, out)
        return out

    def _handle(self, frame: Frame, now: float) -> heartbeat.Step:
        if frame.app == "heartbeat":
            return self.heartbeat.receive(heartbeat.parse(frame.data, self.sender), now)
        if frame.app == "server_group":
            return self._server_group(frame, now)
        raise ProtocolError("unsupported_app", f"app '{frame.app}' is not served here", app=frame.app,
                            msg_type=frame.msg_type)

    def _server_group(self, frame: Frame, now: float) -> heartbeat.Step:
        """Server-group messages are events for the caller, which routes or delivers them."""
        return heartbeat.Step(events=[server_group.parse(frame.data, self.sender)])


class HostChannel(_End):
    sender = "guest"

    """Three limits per guest: frames before parsing (a bound on the work a flood costs),
    then heartbeat and server-group messages apart, so that a guest flooding broadcasts
    loses broadcasts, not its own heartbeat."""

    def __init__(self, *, miss_threshold: int = 2, min_interval_ms: int = 50, max_interval_ms: int = 60_000,
                 rate: float = 100.0, burst: float = 200.0, sg_rate: float = 20.0, sg_burst: float = 40.0,
                 frame_rate: float = 2000.0, frame_burst: float = 4000.0) -> None:
        super().__init__()
        self.heartbeat = heartbeat.HostHeartbeat(miss_threshold=miss_threshold, min_interval_ms=min_interval_ms,
                                                 max_interval_ms=max_interval_ms)
        self._frames = TokenBucket(frame_rate, frame_burst)
        self._hb_bucket = TokenBucket(rate, burst)
        self._sg_bucket = TokenBucket(sg_rate, sg_burst)  # server-group traffic is low-bandwidth (SG-6)

    def _allow(self, now: float) -> bool:
        return self._frames.allow(now)

    def _handle(self, frame: Frame, now: float) -> heartbeat.Step:
        if frame.app == "heartbeat" and not self._hb_bucket.allow(now):
            raise ProtocolError("rate_limited", "heartbeat messages over the rate limit", app="heartbeat",
                                msg_type=frame.msg_type)
        return super()._handle(frame, now)

    def _server_group(self, frame: Frame, now: float) -> heartbeat.Step:
        if not self._sg_bucket.allow(now):
            raise ProtocolError("sg_rate_limited", "server-group messages over the rate limit", app="server_group",
                                msg_type=frame.msg_type)
        return super()._server_group(frame, now)

    def tick(self, now: float) -> Output:
        return self._emit(self.heartbeat.tick(now), Output())

    def closed(self, now: float) -> Output:
        return self._emit(self.heartbeat.closed(now), Output())

    def next_deadline(self) -> float | None:
        return self.heartbeat.next_deadline()


class GuestChannel(_End):
    sender = "host"

    def __init__(self, init: heartbeat.Init, *, init_retry: float = 0.5) -> None:
        super().__init__()
        self.heartbeat = heartbeat.GuestHeartbeat(init, init_retry=init_retry)

    def connected(self, now: float) -> Output:
        return self._emit(self.heartbeat.connected(now), Output())

    def respond(self, value: int, healthy: bool, log_msg: str = "") -> Output:
        return self._emit(self.heartbeat.respond(value, healthy, log_msg), Output())

    def tick(self, now: float) -> Output:
        return self._emit(self.heartbeat.tick(now), Output())

    def exit(self, log_msg: str = "") -> Output:
        return self._emit(self.heartbeat.exit(log_msg), Output())

    def next_deadline(self) -> float | None:
        return self.heartbeat.next_deadline()
