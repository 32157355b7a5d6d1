"""One end of a channel: framing + rate limit + the applications, with error counters.

`HostChannel` is what the agent runs per instance connection; `GuestChannel` is what the
guest daemon runs. Both turn bytes into events and return the bytes to send.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import heartbeat
from .framing import FrameWriter, LineDecoder, ProtocolError, parse_frame
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
            out.data += self.writer.pack("heartbeat", heartbeat.to_data(msg))
        out.events.extend(step.events)
        return out

    def _allow(self, now: float) -> bool:
        return True

    def receive_data(self, data: bytes, now: float) -> Output:
        out = Output()
        for item in self.decoder.feed(data):
            if isinstance(item, ProtocolError):
                self.errors[item.reason] += 1
                continue
            if not self._allow(now):
                self.errors["rate_limited"] += 1
                continue
            try:
                frame = parse_frame(item)
                if frame.app != "heartbeat":
                    raise ProtocolError("unsupported_app", f"app '{frame.app}' is not served here",
                                        app=frame.app, msg_type=frame.msg_type)
                step = self._handle(heartbeat.parse(frame.data, self.sender), now)
            except ProtocolError as err:
                self.errors[err.reason] += 1
                if err.nack:
                    out.data += self.writer.nack(err)
                continue
            self.frames_in += 1
            self._emit(step, out)
        return out

    def _handle(self, msg: Any, now: float) -> heartbeat.Step:
        raise NotImplementedError


class HostChannel(_End):
    sender = "guest"

    def __init__(self, *, miss_threshold: int = 2, min_interval_ms: int = 50, max_interval_ms: int = 60_000,
                 rate: float = 100.0, burst: float = 200.0) -> None:
        super().__init__()
        self.heartbeat = heartbeat.HostHeartbeat(miss_threshold=miss_threshold, min_interval_ms=min_interval_ms,
                                                 max_interval_ms=max_interval_ms)
        self._bucket = TokenBucket(rate, burst)

    def _allow(self, now: float) -> bool:
        return self._bucket.allow(now)

    def _handle(self, msg: Any, now: float) -> heartbeat.Step:
        return self.heartbeat.receive(msg, now)

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

    def _handle(self, msg: Any, now: float) -> heartbeat.Step:
        return self.heartbeat.receive(msg, now)

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
