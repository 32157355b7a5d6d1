"""Server-group messaging end to end: guest daemons in real processes, the real agent and
controller, applications on the guests' local sockets (the `sg` CLI)."""

from __future__ import annotations

import json
import queue
import socket
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
        wait_until(lambda: 'nfvha_group_messages_total{result="no_group"} 2.0' in nfvha.api.get("/metrics").text,
                   what="the outsider's messages counted as dropped")

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
        for reason in ("oversized", "forged_source", "bad_field", "wrong_direction", "sg_rate_limited",
                       "unknown_vote"):
            assert errors.get(reason), f"{reason} not counted: {errors}"
        assert errors["sg_rate_limited"] > 2000
        for g in good:
            assert nfvha.faults(g["id"]) == [] and nfvha.instance(g["id"])["protocol_errors"] == {}
        assert nfvha.faults(bad["id"]) == []  # its own heartbeat went on through the flood
    finally:
        listener.stop()


class Voter:
    """An application on a guest's local socket that answers every revocable action with `answer`."""

    def __init__(self, srv: Server, iid: str, answer: str, reason: str = "") -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(api_socket(srv, iid))
        self.sock.sendall(b'{"op": "listen", "votes": true}\n')
        self.lines = self.sock.makefile("r")
        assert json.loads(self.lines.readline())["ok"]
        self.answer, self.reason = answer, reason
        self.actions: list[dict] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for line in self.lines:
            ev = json.loads(line)
            if ev.get("event") != "action":
                continue
            self.actions.append(ev)
            if ev["notification_type"] == "revocable":
                self.sock.sendall(json.dumps({"op": "vote", "invocation_id": ev["invocation_id"],
                                              "result": self.answer, "reason": self.reason}).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def test_a_guest_vetoes_a_stop_and_cannot_veto_its_repair(nfvha: Server):
    [inst] = members(nfvha, 1, None)
    iid = inst["id"]
    voter = Voter(nfvha, iid, "reject", "draining 1200 calls")
    try:
        resp = nfvha.api.post(f"/v1/instances/{iid}/actions", json={"action": "stop"})
        assert resp.status_code == 409 and "draining 1200 calls" in resp.text
        assert nfvha.instance(iid)["state"] == "running"
        assert [(a["event_type"], a["notification_type"]) for a in voter.actions] == [("stop", "revocable")]
        # a fault's repair is only announced
        nfvha.inject(iid, "unhealthy")
        fault = nfvha.wait_fault(iid, lambda f: f["recovered_at"] is not None, timeout=20)
        assert fault["recovery_action"] == "restart"
        assert ("reboot", "irrevocable") in [(a["event_type"], a["notification_type"]) for a in voter.actions]
    finally:
        voter.close()
    # no voter now (the restarted guest has none): silence is consent
    nfvha.wait_heartbeating(iid)
    resp = nfvha.api.post(f"/v1/instances/{iid}/actions", json={"action": "reboot"})
    assert resp.status_code == 200 and resp.json()["state"] == "running", resp.text
    nfvha.wait_heartbeating(iid)
    assert len(nfvha.faults(iid)) == 1  # a platform action is no fault
    voter = Voter(nfvha, iid, "reject", "busy")
    try:
        resp = nfvha.api.post(f"/v1/instances/{iid}/actions", json={"action": "stop", "force": True})
        assert resp.status_code == 200 and resp.json()["state"] == "stopped", resp.text
    finally:
        voter.close()
    assert nfvha.api.post(f"/v1/instances/{iid}/actions", json={"action": "start"}).json()["state"] == "running"
    bad = nfvha.api.post(f"/v1/instances/{iid}/actions", json={"action": "explode"})
    assert bad.status_code == 422 and "action" in bad.text
    # a vote for an action nobody asked about is refused
    with socket.socket(socket.AF_UNIX) as s:
        nfvha.wait_heartbeating(iid)
        wait_until(lambda: Path(api_socket(nfvha, iid)).exists(), what="the guest's local socket")
        s.connect(api_socket(nfvha, iid))
        s.sendall(b'{"op": "vote", "invocation_id": "nope", "result": "reject"}\n')
        answer = json.loads(s.makefile("r").readline())
        assert not answer["ok"] and "no open vote" in answer["error"]
