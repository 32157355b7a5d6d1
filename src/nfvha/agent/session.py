"""One instance's channel: connect, reconnect with backoff, run the host's protocol end."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from ..wire.channel import HostChannel, Output

EventSink = Callable[[str, object, float], None]  # (instance id, wire event, monotonic time)
MAX_BACKLOG = 64 * 1024
EAGER = 2.0  # seconds of 10 ms connection retries after a start


class ChannelSession:
    def __init__(self, instance_id: str, path: Callable[[str], str | None], sink: EventSink, *, miss_threshold: int = 2,
                 min_interval_ms: int = 50, rate: float = 100.0, burst: float = 200.0) -> None:
        self.instance_id = instance_id
        self.path = path
        self.sink = sink
        self._opts = dict(miss_threshold=miss_threshold, min_interval_ms=min_interval_ms, rate=rate, burst=burst)
        self.chan: HostChannel | None = None
        self._past_errors: Counter[str] = Counter()  # of connections that have closed
        self.connected = False
        self._kick = asyncio.Event()
        self._expect_stop = False
        self._writer: asyncio.StreamWriter | None = None

    def kick(self) -> None:
        """The instance was (re)started: try to connect now instead of at the next backoff."""
        self._kick.set()

    def expect_stop(self, expected: bool = True) -> None:
        """The platform itself is stopping the instance: losing the channel is no fault.

        Clearing it applies to the next connection only: the current one belongs to the
        process being stopped, whose EOF may not have been read yet.
        """
        self._expect_stop = expected
        if expected and self.chan is not None:
            self.chan.heartbeat.expecting_stop = True

    def send(self, app: str, data: dict) -> bool:
        """A message of the platform's own for the guest (server-group traffic); best effort."""
        writer, chan = self._writer, self.chan
        if writer is None or chan is None or writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            chan.errors["write_backlog"] += 1
            return False
        writer.write(chan.writer.pack(app, data))
        return True

    @property
    def errors(self) -> Counter[str]:
        """Protocol errors counted by reason, over every connection so far."""
        return self._past_errors + (self.chan.errors if self.chan else Counter())

    @property
    def interval_ms(self) -> int | None:
        hb = self.chan.heartbeat if self.chan else None
        return round(hb.interval * 1000) if hb and hb.init else None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff, eager_until = 0.01, loop.time() + EAGER
        while True:
            try:
                path = self.path(self.instance_id)  # a libvirt domain's is known once it runs
                if path is None:
                    raise FileNotFoundError
                reader, writer = await asyncio.open_unix_connection(path)
            except OSError:
                self._kick.clear()
                try:
                    async with asyncio.timeout(backoff):
                        await self._kick.wait()
                    backoff, eager_until = 0.01, loop.time() + EAGER
                except TimeoutError:
                    # a (re)started guest serves its channel within a few hundred ms: poll that
                    # window closely, then back off
                    backoff = 0.01 if loop.time() < eager_until else min(backoff * 2, 0.5)
                continue
            backoff = 0.01
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chan = HostChannel(**self._opts)
        chan.heartbeat.expecting_stop = self._expect_stop
        self.chan, self.connected, self._writer = chan, True, writer
        timer: asyncio.TimerHandle | None = None

        def deliver(out: Output, now: float) -> None:
            nonlocal timer
            if out.data and not writer.is_closing():
                if writer.transport.get_write_buffer_size() > MAX_BACKLOG:
                    chan.errors["write_backlog"] += 1  # the guest reads nothing: do not buffer without bound
                else:
                    writer.write(out.data)
            for ev in out.events:
                self.sink(self.instance_id, ev, now)
            deadline = chan.next_deadline()
            if timer is not None and (deadline is None or timer.when() != deadline):
                timer.cancel()
                timer = None
            if deadline is not None and timer is None:
                timer = loop.call_at(deadline, on_timer)

        def on_timer() -> None:
            nonlocal timer
            timer = None
            now = loop.time()
            deliver(chan.tick(now), now)

        try:
            while data := await reader.read(65536):
                now = loop.time()
                deliver(chan.receive_data(data, now), now)
        except ConnectionError:
            pass
        finally:
            if timer is not None:
                timer.cancel()
            now = loop.time()
            events = chan.closed(now).events
            self._past_errors.update(chan.errors)
            self.chan, self.connected, self._writer = None, False, None
            for ev in events:
                self.sink(self.instance_id, ev, now)
            writer.close()
