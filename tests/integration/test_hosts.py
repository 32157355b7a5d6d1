"""Host failures across real hosts: network namespaces, each with its own agent and hostmon,
a controller fencing with the netns driver (HOST-1..4, HOST-6, POD-1..4)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.hatest.harness import Receiver, guest_command, wait_until
from nfvha.hatest.netns import CopyWatch, Lab

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


@pytest.fixture
def lab(state_dir: Path, receiver: Receiver) -> Iterator[Lab]:
    with Lab(state_dir) as lab:
        lab.add_hosts("h1", "h2", "h3")
        lab.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"})
        yield lab


def create(lab: Lab, name: str, host: str | None = None, **kw: object) -> str:
    assert lab.ctl is not None
    iid = lab.ctl.create(name, guest_command(name), **({"host": host} if host else {}), **kw)["id"]
    lab.ctl.wait_heartbeating(iid)
    return iid


def failure(lab: Lab, host: str, states: tuple[str, ...], timeout: float = 20.0) -> dict:
    def done() -> dict | None:
        found = lab.api.get("/v1/host-failures", params={"host": host}).json()
        return found[0] if found and found[0]["state"] in states else None
    return wait_until(done, timeout, f"a failure of {host} in state {states}")  # type: ignore[return-value]


def where(lab: Lab) -> dict[str, tuple[str, str]]:
    return {i["name"]: (i["host"], i["heartbeat_status"]) for i in lab.api.get("/v1/instances").json()}


def test_a_killed_host_is_fenced_announced_and_its_instances_run_elsewhere(lab: Lab, receiver: Receiver):
    group = lab.api.post("/v1/server-groups", json={"name": "pair", "policy": "anti-affinity"}).json()
    create(lab, "a", "h1", server_group=group["id"])
    create(lab, "b", "h2", server_group=group["id"])
    for k in range(4):
        create(lab, f"i{k}", "h1")

    with CopyWatch() as watch:
        lab.kill("h1")
        f = failure(lab, "h1", ("recovered",))
    assert watch.samples > 10 and max(watch.max.values()) == 1  # never two copies of one instance
    assert lab.processes("h1") == 0
    at = where(lab)
    assert all(status == "heartbeating" and host != "h1" for host, status in at.values()), at
    assert at["a"][0] == "h3"  # anti-affinity: not beside b
    assert {e["instance_name"] for e in f["evacuations"]} == {"a", "i0", "i1", "i2", "i3"}
    assert all(e["state"] == "done" and e["started_at"] >= f["fenced_at"] for e in f["evacuations"])
    assert f["fence_driver"] == "netns" and f["detection_ms"] > 0 and f["recovery_ms"] > 0

    # one correlated event per stage, the instances attached: not five unrelated faults
    wait_until(lambda: receiver.events("nfvha.host.recovered"), what="host.recovered delivered")
    down = receiver.events("nfvha.host.down")
    assert len(down) == 1 and {i["name"] for i in down[0]["data"]["instances"]} == {"a", "i0", "i1", "i2", "i3"}
    assert [len(receiver.events(t)) for t in ("nfvha.host.fenced", "nfvha.instance.fault")] == [1, 0]
    assert wait_until(lambda: lab.api.get(f"/v1/host-failures/{f['id']}").json()["notified_at"])
    assert lab.api.get("/v1/hosts").json()[0]["state"] == "down"

    lab.restore("h1")  # it boots again: up, and running nothing of what moved
    lab.wait_connected("h1")
    wait_until(lambda: receiver.events("nfvha.host.up"), what="host.up delivered")
    time.sleep(0.5)
    assert max(watch.max.values()) == 1 and all(h != "h1" for h, _ in where(lab).values())


def test_an_isolated_host_that_runs_on_is_fenced_before_anything_moves(lab: Lab):
    ids = [create(lab, f"i{k}", "h1") for k in range(3)]
    with CopyWatch() as watch:
        lab.cut("h1")  # both its networks: its instances keep running, unseen
        time.sleep(0.2)
        assert lab.processes("h1") >= 5  # agent, hostmon, three guests
        f = failure(lab, "h1", ("recovered",))
    assert max(watch.max[i] for i in ids) == 1
    assert all(e["started_at"] >= f["fenced_at"] for e in f["evacuations"])
    assert lab.processes("h1") == 0


def test_a_dead_agent_is_not_a_dead_host_and_its_instances_are_adopted(lab: Lab, receiver: Receiver):
    iid = create(lab, "i0", "h1")
    pid = lab.api.get(f"/v1/instances/{iid}").json()["pid"]
    with CopyWatch() as watch:
        lab.kill_agent("h1")
        wait_until(lambda: receiver.events("nfvha.host.agent_down"), what="host.agent_down delivered")
        time.sleep(1.5)  # re-probed meanwhile: still running
        assert lab.api.get("/v1/host-failures").json() == []
        assert [h["state"] for h in lab.api.get("/v1/hosts").json()] == ["agent_down", "up", "up"]
        os.kill(pid, 0)  # the instance runs on, unwatched

        lab.start_agent("h1")
        lab.wait_connected("h1")
        inst = lab.ctl.wait_heartbeating(iid)  # type: ignore[union-attr]
    assert inst["pid"] == pid and inst["host"] == "h1"  # adopted, not started again
    assert watch.max[iid] == 1
    wait_until(lambda: receiver.events("nfvha.host.up"), what="host.up delivered")
    assert lab.ctl.faults(iid) == []  # type: ignore[union-attr]


def test_a_host_cut_off_only_from_management_is_agent_down_and_keeps_its_instances(lab: Lab, receiver: Receiver):
    iid = create(lab, "i0", "h1")
    pid = lab.api.get(f"/v1/instances/{iid}").json()["pid"]
    with CopyWatch() as watch:
        lab.cut("h1", nets=("m",))  # its hostmon still answers on the second network
        wait_until(lambda: receiver.events("nfvha.host.agent_down"), what="host.agent_down delivered")
        assert lab.api.get("/v1/host-failures").json() == [] and lab.processes("h1") >= 3
        lab.restore("h1")
        wait_until(lambda: receiver.events("nfvha.host.up"), what="host.up delivered")
        inst = lab.ctl.wait_heartbeating(iid)  # type: ignore[union-attr]
    assert inst["pid"] == pid and inst["host"] == "h1" and watch.max[iid] == 1


def test_a_frozen_host_is_down(lab: Lab):
    create(lab, "i0", "h2")
    lab.freeze("h2")
    f = failure(lab, "h2", ("recovered",))
    assert [e["to_host"] for e in f["evacuations"]] in (["h1"], ["h3"])


def test_a_vnf_owned_instance_waits_for_its_vnf_then_escalates(lab: Lab):
    slow = create(lab, "slow", "h1", owner="vnf", escalate_after=1.5)
    mine = create(lab, "mine", "h1", owner="vnf", escalate_after=600)
    resp = lab.api.post(f"/v1/instances/{mine}/actions", json={"action": "evacuate"})
    assert resp.status_code == 409 and "not down" in resp.text  # its host is fine

    lab.kill("h1")
    f = failure(lab, "h1", ("evacuating",))
    resp = lab.api.post(f"/v1/instances/{mine}/actions", json={"action": "evacuate", "host": "h3"})
    assert resp.status_code == 200, resp.text  # the VNF layer repairs it, where it chooses
    f = failure(lab, "h1", ("recovered",))
    evs = {e["instance_name"]: e for e in f["evacuations"]}
    assert evs["mine"]["to_host"] == "h3" and not evs["mine"]["escalated"]
    assert evs["slow"]["escalated"]  # the VNF did nothing: the platform did, after its 1.5 s
    fenced = time.mktime(time.strptime(f["fenced_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    started = time.mktime(time.strptime(evs["slow"]["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert started - fenced >= 1
    assert where(lab)["slow"][1] == "heartbeating" and lab.ctl.faults(slow) == []  # type: ignore[union-attr]


def test_reserved_hosts_take_over_under_the_segment_recovery_method(lab: Lab):
    assert lab.api.patch("/v1/hosts/h3", json={"reserved": True}).json()["reserved"]
    bad = [(lab.api.patch("/v1/hosts/nope", json={"reserved": True}), 404),
           (lab.api.patch("/v1/hosts/h3", json={"capacity": -1}), 422),
           (lab.api.put("/v1/segments/default", json={"recovery_method": "pray"}), 422)]
    assert [r.status_code for r, _ in bad] == [s for _, s in bad], [r.text for r, _ in bad]
    assert lab.api.put("/v1/segments/default", json={"recovery_method": "reserved_host"}).status_code == 200
    ids = [create(lab, f"i{k}") for k in range(4)]  # never placed on the reserved host
    resp = lab.api.post("/v1/instances", json={"name": "x", "command": guest_command("x"), "host": "h3"})
    assert resp.status_code == 409 and "reserved" in resp.text
    assert {lab.api.get(f"/v1/instances/{i}").json()["host"] for i in ids} == {"h1", "h2"}

    lab.kill("h1")
    f = failure(lab, "h1", ("recovered",))
    assert {e["to_host"] for e in f["evacuations"]} == {"h3"}
    assert not next(h for h in lab.api.get("/v1/hosts").json() if h["name"] == "h3")["reserved"]


def test_without_a_fence_device_nothing_moves_and_an_alarm_is_raised(state_dir: Path, receiver: Receiver):
    with Lab(state_dir, fence="none") as lab:
        lab.add_hosts("h1", "h2")
        lab.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"})
        iid = create(lab, "i0", "h1")
        lab.kill("h1")
        f = failure(lab, "h1", ("fence_failed",))
        assert "no fence driver" in f["fence_error"] and f["evacuations"] == []
        alarm = wait_until(lambda: receiver.events("nfvha.host.fence_failed"), what="the alarm")
        assert alarm[0]["data"]["host"] == "h1"  # type: ignore[index]
        time.sleep(1.0)
        assert where(lab)["i0"][0] == "h1"

        lab.restore("h1")  # the host comes back: its instance starts there again
        lab.wait_connected("h1")
        lab.ctl.wait_heartbeating(iid)  # type: ignore[union-attr]
        assert failure(lab, "h1", ("host_returned",))["fenced_at"] is None


def test_replica_sets_keep_their_count_across_scaling_and_host_failure(lab: Lab):
    api = lab.api
    tmpl = {"command": guest_command("r")}
    bad = [api.post("/v1/replica-sets", json={"name": "r", "replicas": -1, "template": tmpl}),
           api.post("/v1/replica-sets", json={"name": "r", "replicas": 1, "template": {"command": []}}),
           api.post("/v1/replica-sets", json={"name": "r", "replicas": 1,
                                              "template": {**tmpl, "server_group": "nope"}}),
           api.post("/v1/replica-sets", json={"name": "r", "replicas": 1, "template": {**tmpl, "host": "h1"}})]
    assert [r.status_code for r in bad] == [422] * 4, [r.text for r in bad]
    assert api.get("/v1/instances").json() == []

    rs = api.post("/v1/replica-sets", json={"name": "r", "replicas": 3, "template": tmpl}).json()

    def ready(n: int) -> dict:
        return wait_until(lambda: (x := api.get(f"/v1/replica-sets/{rs['id']}").json())["ready"] == n
                          and len(x["members"]) == n and x, 20, f"{n} replicas ready")  # type: ignore[return-value]

    got = ready(3)
    assert sorted(m["name"] for m in got["members"]) == ["r-0", "r-1", "r-2"]
    api.patch(f"/v1/replica-sets/{rs['id']}", json={"replicas": 5})
    ready(5)
    api.patch(f"/v1/replica-sets/{rs['id']}", json={"replicas": 2})
    got = ready(2)  # the extras are terminated
    assert sorted(m["name"] for m in got["members"]) == ["r-0", "r-1"]
    assert api.delete(f"/v1/instances/{got['members'][0]['id']}").status_code == 409

    victim = got["members"][0]["host"]
    lab.kill(victim)
    failure(lab, victim, ("recovered",))
    got = ready(2)
    assert victim not in {m["host"] for m in got["members"]}
    assert api.delete(f"/v1/replica-sets/{rs['id']}").status_code == 204
    assert api.get("/v1/instances").json() == []
