"""Server-group messaging end to end: guest daemons in real processes, the real agent and
controller, applications on the guests' local sockets (the `sg` CLI)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

from nfvha.hatest.harness import Server, guest_command, wait_until

HOSTILE = str(Path(__file__).with_name("hostile_member.py"))
SG = [sys.executable, "-m", "nfvha.guest", "sg"]


def api_socket(srv: Server, iid: str) -> str:
    return str(srv.state_dir / "ch" / f"{iid}.api")


class Listener:
    """`sg listen` on one guest, its events collected in the background."""

    def __init__(self, srv: Server, iid: str) -> None:
        self.proc = subprocess.Popen([*SG, "--socket", api_socket(srv, iid), "listen"], stdout=subprocess.PIPE,
                                     text=True)
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.events.put(json.loads(line))

    def next(self, kind: str, timeout: float = 10.0) -> dict:
        while True:
            ev = self.events.get(timeout=timeout)
            if ev["event"] == kind:
                return ev

    def drain(self) -> list[dict]:
        out = []
        while not self.events.empty():
            out.append(self.events.get())
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def sg(srv: Server, iid: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SG, "--socket", api_socket(srv, iid), *args], capture_output=True, text=True, timeout=15)


def members(srv: Server, n: int, group: str | None) -> list[dict]:
    out = []
    for k in range(n):
        extra = {"server_group": group} if group else {}
        inst = srv.create(f"m{k}-{group or 'none'}"[:40], guest_command(f"m{k}", 100), **extra)
        out.append(inst)
    for inst in out:
        srv.wait_heartbeating(inst["id"])
        wait_until(lambda i=inst: Path(api_socket(srv, i["id"])).exists(), what="the guest's local socket")
    return out


def test_broadcast_status_and_notifications_stay_within_the_group(nfvha: Server):
    group = nfvha.api.post("/v1/server-groups", json={"name": "trio", "policy": "soft-anti-affinity"}).json()
    a, b, c = members(nfvha, 3, group["id"])
    [outsider] = members(nfvha, 1, None)
    listeners = {i["id"]: Listener(nfvha, i["id"]) for i in (a, b, c, outsider)}
    try:
        wait_until(lambda: sg(nfvha, a["id"], "status").returncode == 0, what="status answered")
        assert sg(nfvha, a["id"], "broadcast", "héllo from a").returncode == 0
        for other in (b, c):
            ev = listeners[other["id"]].next("broadcast")
            assert ev == {"event": "broadcast", "source_instance": a["id"], "data": "héllo from a"}

        out = sg(nfvha, a["id"], "status")
        seen = [json.loads(line) for line in out.stdout.splitlines()]
        assert {m["id"] for m in seen} == {a["id"], b["id"], c["id"]}
        assert all(m["state"] == "running" for m in seen)

        # the outsider is in no group: its status is refused, its broadcast goes nowhere
        out = sg(nfvha, outsider["id"], "status")
        assert out.returncode == 1 and "in no server group" in out.stderr
        assert sg(nfvha, outsider["id"], "broadcast", "anyone?").returncode == 0

        # a member's state changes: the others are told, the member itself is not
        nfvha.inject(b["id"], "crash")
        ev = listeners[a["id"]].next("notification")
        assert ev["instance"]["id"] == b["id"] and ev["instance"]["state"] in ("exited", "fault")
        listeners[c["id"]].next("notification")
        nfvha.wait_heartbeating(b["id"])
        assert nfvha.api.delete(f"/v1/instances/{c['id']}").status_code == 204
        wait_until(lambda: any(e["event"] == "notification" and e["instance"]["id"] == c["id"]
                               and e["instance"]["state"] == "deleted" for e in listeners[a["id"]].drain()),
                   what="a told of c's deletion")

        # nothing ever reached the sender or the outsider, nor came from outside the group
        assert not [e for e in listeners[outsider["id"]].drain() if e["event"] == "broadcast"]
        assert not [e for e in listeners[a["id"]].drain() if e["event"] == "broadcast"]
        assert not [e for e in listeners[b["id"]].drain() if e["event"] == "broadcast"]
    finally:
        for listener in listeners.values():
            listener.stop()


def test_a_hostile_member_is_refused_counted_and_rate_limited(nfvha: Server):
    group = nfvha.api.post("/v1/server-groups", json={"name": "victims", "policy": "affinity"}).json()
    good = members(nfvha, 2, group["id"])
    bad = nfvha.create("hostile-member", [sys.executable, HOSTILE, "{channel}"], server_group=group["id"])
    listener = Listener(nfvha, good[0]["id"])
    try:
        got = []
        while not any(e["data"] == "last" for e in got):
            got.append(listener.next("broadcast", timeout=20))
        # only well-formed broadcasts from the hostile member, stamped with its real id, rate-limited
        assert {e["source_instance"] for e in got} == {bad["id"]}
        assert all(e["data"].startswith("flood") or e["data"] == "last" for e in got)
        assert len(got) <= 40 + 20 * 3 + 2, len(got)  # burst + rate × 3 s (+ the last, + rounding)
        errors = nfvha.instance(bad["id"])["protocol_errors"]
        for reason in ("oversized", "forged_source", "bad_field", "wrong_direction", "sg_rate_limited"):
            assert errors.get(reason), f"{reason} not counted: {errors}"
        assert errors["sg_rate_limited"] > 2000
        for g in good:
            assert nfvha.faults(g["id"]) == [] and nfvha.instance(g["id"])["protocol_errors"] == {}
        assert nfvha.faults(bad["id"]) == []  # its own heartbeat went on through the flood
    finally:
        listener.stop()
