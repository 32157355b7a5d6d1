"""The guest's end of the channel: a virtio-serial port, or a unix socket the daemon serves.

Both give the daemon the same three callbacks: connected, data, and a way to write.
With a unix socket the daemon plays QEMU's part (server; the agent connects, and a new
connection replaces the old one). A virtio-serial port cannot tell whether the host is
there, so "connected" fires once when the port opens and the protocol's own re-init
covers a host that comes and goes.
"""

from __future__ import annotations

import asyncio
import glob
import os
from typing import Callable

PORT_NAME = "nfvha.guest.0"


def find_port(name: str = PORT_NAME) -> str:
    """The port's device: the udev link, else the port whose sysfs name matches."""
    link = f"/dev/virtio-ports/{name}"
    if os.path.exists(link):
        return link
    for path in glob.glob("/sys/class/virtio-ports/*/name"):
        with open(path) as f:
            if f.read().strip() == name:
                return "/dev/" + path.split("/")[-2]
    raise FileNotFoundError(f"no virtio-serial port named {name}")


class Transport:
    def __init__(self, on_connect: Callable[[], None], on_data: Callable[[bytes], None]) -> None:
        self.on_connect = on_connect
        self.on_data = on_data

    async def start(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _Conn(asyncio.Protocol):
    def __init__(self, owner: UnixServerTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner._accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.owner.current is self:
            self.owner.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.owner.current is self:
            self.owner.current = None


class UnixServerTransport(Transport):
    def __init__(self, path: str, on_connect: Callable[[], None], on_data: Callable[[bytes], None]) -> None:
        super().__init__(on_connect, on_data)
        self.path = path
        self.current: _Conn | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket of an earlier incarnation
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _Conn(self), self.path)

    def _accepted(self, conn: _Conn) -> None:
        old, self.current = self.current, conn
        if old is not None and old.transport is not None:
            old.transport.close()
        self.on_connect()

    def write(self, data: bytes) -> None:
        conn = self.current
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)

    async def close(self) -> None:
        if self.current is not None and self.current.transport is not None:
            self.current.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if os.path.exists(self.path):
            os.unlink(self.path)


class DeviceTransport(Transport):
    """A virtio-serial character device, non-blocking; a write the port cannot take
    (host not connected, queue full) is dropped: init is retried, challenges re-sent."""

    def __init__(self, path: str, on_connect: Callable[[], None], on_data: Callable[[bytes], None]) -> None:
        super().__init__(on_connect, on_data)
        self.path = path
        self.fd = -1

    async def start(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        self.on_connect()

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if data:
            self.on_data(data)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except (BlockingIOError, BrokenPipeError):
            pass

    async def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def open_transport(spec: str, on_connect: Callable[[], None], on_data: Callable[[bytes], None]) -> Transport:
    """`unix:PATH` serves a socket; a device path, or `auto`, opens the virtio-serial port."""
    if spec.startswith("unix:"):
        return UnixServerTransport(spec[5:], on_connect, on_data)
    return DeviceTransport(find_port() if spec == "auto" else spec, on_connect, on_data)
