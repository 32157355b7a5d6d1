"""An active/standby VNF that uses nfvha's server-group channel to decide who is active.

Each instance runs this file as its guest daemon and application in one process:

    python app.py --channel unix:PATH --state-dir DIR

Rules, all through the platform (no tenant network needed):
- the active one is the lowest-id member the platform reports `running` (status query at
  start, then peer notifications keep the view current);
- the active one broadcasts "active" every 0.5 s; a member that hears a claim from a
  lower id than its own stands by at once.
It also pings its peer over its "tenant network" (UDP on loopback, the peer's port learned
from its broadcasts); touching DIR/tenant-down cuts that network. The role does not depend
on it, so the pair stays single-active when the tenant network is cut.
The current role is written to DIR/<instance id>.role.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

from nfvha.guest import GroupError, GuestConfig, GuestDaemon


class App:
    def __init__(self, daemon: GuestDaemon, me: str, state_dir: Path) -> None:
        self.daemon, self.me, self.dir = daemon, me, state_dir
        self.running: dict[str, bool] = {}  # member id -> running, as the platform says
        self.role = "standby"
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.peer_port: int | None = None
        daemon.group.on_notification(self.on_notification)
        daemon.group.on_broadcast(self.on_broadcast)

    def tenant_up(self) -> bool:
        return not (self.dir / "tenant-down").exists()

    def decide(self, reason: str) -> None:
        alive = sorted(m for m, up in self.running.items() if up) or [self.me]
        role = "active" if alive[0] == self.me else "standby"
        if role != self.role:
            self.role = role
            print(f"{self.me[:8]}: {role} ({reason})", flush=True)
        tmp = self.dir / f"{self.me}.role.tmp"
        tmp.write_text(self.role)
        tmp.replace(self.dir / f"{self.me}.role")  # never seen half-written

    def on_notification(self, instance: dict) -> None:
        self.running[instance["id"]] = instance["state"] == "running"
        self.decide(f"{instance['name']} is {instance['state']}")

    def on_broadcast(self, source: str, data: str) -> None:
        msg = json.loads(data)
        self.peer_port = msg["udp"]
        if msg["role"] == "active" and source < self.me:
            self.running[source] = True
            self.decide("a lower id claims active")

    async def run(self) -> None:
        while True:
            try:
                for m in await self.daemon.group.status():
                    self.running[m["id"]] = m["state"] == "running"
                self.running[self.me] = True
                self.decide("status")
                break
            except GroupError:
                await asyncio.sleep(0.2)  # not registered yet
        while True:
            self.daemon.group.broadcast(json.dumps({"role": self.role, "udp": self.udp.getsockname()[1]}))
            if self.peer_port and self.tenant_up():
                self.udp.sendto(b"ping", ("127.0.0.1", self.peer_port))
            try:
                while True:
                    self.udp.recvfrom(64)
            except BlockingIOError:
                pass
            self.decide("tick")
            await asyncio.sleep(0.5)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channel", default=f"unix:{os.environ.get('NFVHA_CHANNEL', '')}")
    p.add_argument("--state-dir", type=Path, required=True)
    args = p.parse_args()
    me = os.environ["NFVHA_INSTANCE_ID"]
    daemon = GuestDaemon(args.channel, GuestConfig(name=f"vnf-{me[:8]}", interval_ms=200))
    app = App(daemon, me, args.state_dir)
    task = asyncio.ensure_future(app.run())
    try:
        await daemon.run()
    finally:
        task.cancel()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
