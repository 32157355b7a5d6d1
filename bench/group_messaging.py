"""Server-group messaging: broadcast fan-out, peer notifications, and a flooding member.

    .venv/bin/python bench/group_messaging.py [--members 16] [--agents 4] [--broadcasts 300]

Runs `nfvha controller` and `--agents` agents (hosts h1…hN, real processes, one machine),
a server group of `--members` real guest daemons spread over them (soft-anti-affinity), and
applications on the guests' local sockets. Times are this machine's clocks. Prints a final
JSON line:
- fanout: a broadcast written to one member's local socket → read by every other member's
  application (target p99 ≤ 20 ms), senders in rotation, one broadcast every `--gap-ms`;
- notification: a member's new state stored by the controller (its `updated_at`) → the
  notification read by every other member's application (target p99 ≤ 50 ms);
- flood: one member broadcasting 1,000 per second for 10 s: what got through, the fan-out of
  another member meanwhile, and the faults of the others (target: none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from nfvha.hatest.harness import Server, agent_dir, cluster, guest_command, wait_until
from nfvha.hatest.measure import summary


class App:
    """An application on one guest's local socket: listens, and sends what it is asked to."""

    def __init__(self, iid: str, path: str) -> None:
        self.iid, self.path = iid, path
        self.waiters: dict[str, asyncio.Future] = {}
        self.notified: list[tuple[float, dict]] = []

    async def start(self) -> None:
        reader, self.listen_writer = await asyncio.open_unix_connection(self.path)
        self.listen_writer.write(b'{"op": "listen"}\n')
        json.loads(await reader.readline())
        self._reader = asyncio.ensure_future(self._read(reader))
        _, self.writer = await asyncio.open_unix_connection(self.path)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            at = time.time()
            ev = json.loads(line)
            if ev["event"] == "broadcast" and ev["data"] in self.waiters:
                self.waiters.pop(ev["data"]).set_result(at)
            elif ev["event"] == "notification":
                self.notified.append((at, ev["instance"]))

    def broadcast(self, data: str) -> None:
        self.writer.write(json.dumps({"op": "broadcast", "data": data}).encode() + b"\n")

    async def close(self) -> None:
        self._reader.cancel()
        self.writer.close()
        self.listen_writer.close()


async def fanout(apps: list[App], count: int, gap: float, senders: list[App] | None = None) -> list[float]:
    """Broadcast `count` times, senders in rotation; the time until the last member read each."""
    loop = asyncio.get_running_loop()
    senders = senders or apps
    out = []
    for k in range(count):
        sender = senders[k % len(senders)]
        tag = f"b{k}-{time.monotonic_ns()}"
        futs = []
        for app in apps:
            if app is not sender:
                futs.append(app.waiters.setdefault(tag, loop.create_future()))
        t0 = time.time()
        sender.broadcast(tag)
        done = await asyncio.wait_for(asyncio.gather(*futs), 5)
        out.append((max(done) - t0) * 1000)
        await asyncio.sleep(gap)
    return out


def wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def measure(srv: Server, ids: list[str], state: Path, args: argparse.Namespace) -> dict:
    apps = [App(i, str(api_socket(srv, state, i))) for i in ids]
    for app in apps:
        await app.start()
    await fanout(apps, 20, args.gap_ms / 1000)  # warm-up
    fan = await fanout(apps, args.broadcasts, args.gap_ms / 1000)

    # notifications: stop and start members in rotation (forced: no vote to wait for)
    notif = []
    for k in range(args.changes):
        subject = apps[(k // 2) % len(apps)]  # stopped, then started again
        for app in apps:
            app.notified.clear()
        action = "stop" if k % 2 == 0 else "start"
        resp = await asyncio.to_thread(srv.api.post, f"/v1/instances/{subject.iid}/actions",
                                       json={"action": action, "force": True})
        resp.raise_for_status()
        want = "stopped" if action == "stop" else "running"
        others = [a for a in apps if a is not subject]
        deadline = time.time() + 5
        while time.time() < deadline:
            got = [next((t - wall(inst["updated_at"]) for t, inst in a.notified
                         if inst["id"] == subject.iid and inst["state"] == want), None) for a in others]
            if all(g is not None for g in got):
                notif.append(max(got) * 1000)  # type: ignore[type-var]
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError(f"not every member was told {subject.iid} is {want}")
        if action == "start":
            await asyncio.to_thread(srv.wait_heartbeating, subject.iid)
            await asyncio.sleep(0.3)  # the guest's local socket is back
            await subject.close()
            await subject.start()

    # a flood from one member while another keeps broadcasting to the group
    flooder, others = apps[0], apps[1:]
    faults_before = {i: len(srv.faults(i)) for i in ids}
    end = time.monotonic() + args.flood_secs

    async def flood() -> int:
        sent = 0
        while time.monotonic() < end:
            for _ in range(10):
                flooder.broadcast(f"flood {sent}")
                sent += 1
            await asyncio.sleep(0.01)
        return sent

    flood_task = asyncio.ensure_future(flood())
    during = await fanout(others, max(10, int(args.flood_secs * 10)), 0.1, senders=others[:4])
    sent = await flood_task
    await asyncio.sleep(1.0)
    flooder_errors = srv.instance(flooder.iid)["protocol_errors"]
    false_faults = sum(len(srv.faults(i)) - faults_before[i] for i in ids)
    for app in apps:
        await app.close()
    return {"fanout": summary(fan), "notification": summary(notif),
            "flood": {"sent": sent, "rate_limited": flooder_errors.get("sg_rate_limited", 0),
                      "fanout_of_others_meanwhile": summary(during), "faults": false_faults}}


def api_socket(ctl: Server, state: Path, iid: str) -> Path:
    return agent_dir(state, ctl.instance(iid)["host"]) / "ch" / f"{iid}.api"


def run(ctl: Server, state: Path, args: argparse.Namespace) -> None:
    group = ctl.api.post("/v1/server-groups", json={"name": "bench", "policy": "soft-anti-affinity"}).json()
    ids = [ctl.create(f"m{k}", guest_command(f"m{k}", 1000), server_group=group["id"])["id"]
           for k in range(args.members)]
    for iid in ids:
        ctl.wait_heartbeating(iid, 30)
    wait_until(lambda: all(api_socket(ctl, state, i).exists() for i in ids), what="local sockets")
    result = asyncio.run(measure(ctl, ids, state, args))
    print(json.dumps({"bench": "group_messaging", "members": args.members, "agents": args.agents,
                      "gap_ms": args.gap_ms,
                      "fanout_target_p99_ms": 20, "notification_target_p99_ms": 50, **result}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--broadcasts", type=int, default=300)
    p.add_argument("--gap-ms", type=int, default=100, help="between broadcasts (the group's whole traffic)")
    p.add_argument("--changes", type=int, default=40, help="member state changes (stop, start, …)")
    p.add_argument("--flood-secs", type=float, default=10.0)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    try:
        with cluster(state, [f"h{k + 1}" for k in range(args.agents)]) as ctl:
            run(ctl, state, args)
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
