"""A host's second witness: `nfvha hostmon` answers the controller's UDP probes on a network
other than the agents' management network, in a process other than the agent.

When a host's agent falls silent, the controller probes: an answer means the host runs and
only its agent is down (`host.agent_down`: nothing is fenced or moved); silence, that the
host is down, frozen or cut off (`host.down`: fence, then evacuate).
"""

from __future__ import annotations

import asyncio
import os

PROBE = b"nfvha-probe "
ALIVE = b"nfvha-alive "
MAX_NONCE = 32


class _Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        nonce = data[len(PROBE):]
        if data.startswith(PROBE) and 0 < len(nonce) <= MAX_NONCE:  # anything else: not ours, ignored
            self.transport.sendto(ALIVE + nonce, addr)  # type: ignore[attr-defined]


async def serve(host: str, port: int) -> None:
    """Answer probes on HOST:PORT until cancelled."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Responder, local_addr=(host, port))
    try:
        await asyncio.Future()
    finally:
        transport.close()


class _Prober(asyncio.DatagramProtocol):
    def __init__(self, nonce: bytes) -> None:
        self.nonce = nonce
        self.answered = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if data == ALIVE + self.nonce and not self.answered.done():
            self.answered.set_result(True)

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. port unreachable: no hostmon there, so no witness


async def probe(host: str, port: int, window: float, every: float = 0.05) -> bool:
    """Whether the hostmon at HOST:PORT answers within `window` seconds (sent every `every` s)."""
    loop = asyncio.get_running_loop()
    nonce = os.urandom(8).hex().encode()
    try:
        transport, proto = await loop.create_datagram_endpoint(lambda: _Prober(nonce), remote_addr=(host, port))
    except OSError:
        return False  # no route: as good as no answer
    try:
        async with asyncio.timeout(window):
            while True:
                transport.sendto(PROBE + nonce)
                try:
                    async with asyncio.timeout(every):
                        return await asyncio.shield(proto.answered)
                except TimeoutError:
                    continue
    except TimeoutError:
        # an answer read in the same loop iteration as the deadline still counts: a busy
        # controller must not turn its own lateness into the host's silence
        return proto.answered.done()
    finally:
        transport.close()
