"""Server groups in the inventory: the API contract, and placement by policy over real agents."""

from __future__ import annotations

from pathlib import Path

from nfvha.hatest.harness import Server, cluster, guest_command


def test_server_group_contract_membership_and_bad_requests(nfvha: Server):
    api = nfvha.api
    resp = api.post("/v1/server-groups", json={"name": "pair", "policy": "anti-affinity"})
    assert resp.status_code == 201, resp.text
    group = resp.json()
    assert group["name"] == "pair" and group["policy"] == "anti-affinity" and group["members"] == []
    bad = [
        (api.post("/v1/server-groups", json={"name": "pair", "policy": "affinity"}), 409, "name"),
        (api.post("/v1/server-groups", json={"name": "g2", "policy": "together"}), 422, "policy"),
        (api.post("/v1/server-groups", json={"name": "g2", "policy": "affinity", "size": 2}), 422, "size"),
        (api.post("/v1/server-groups", json={"name": "", "policy": "affinity"}), 422, "name"),
        (api.post("/v1/instances", json={"name": "x", "command": ["true"], "server_group": "nope"}), 422,
         "server_group"),
        (api.get("/v1/server-groups/nope"), 404, "nope"),
        (api.delete("/v1/server-groups/nope"), 404, "nope"),
    ]
    for resp, status, word in bad:
        assert resp.status_code == status and word in resp.text, (resp.request.url, resp.text)
    assert api.get("/v1/instances").json() == []

    a = nfvha.create("a", guest_command("a"), server_group=group["id"])
    assert a["server_group"] == group["id"]
    got = api.get(f"/v1/server-groups/{group['id']}").json()
    assert [(m["id"], m["name"], m["host"]) for m in got["members"]] == [(a["id"], "a", a["host"])]
    # one host only: a second member of an anti-affinity group has nowhere to go
    resp = api.post("/v1/instances", json={"name": "b", "command": guest_command("b"), "server_group": group["id"]})
    assert resp.status_code == 409 and "anti-affinity" in resp.text
    assert [i["name"] for i in api.get("/v1/instances").json()] == ["a"]

    resp = api.delete(f"/v1/server-groups/{group['id']}")
    assert resp.status_code == 409 and "has members (a)" in resp.json()["detail"]
    assert api.delete(f"/v1/instances/{a['id']}").status_code == 204
    assert api.delete(f"/v1/server-groups/{group['id']}").status_code == 204
    assert api.get(f"/v1/server-groups/{group['id']}").status_code == 404
    assert api.get("/v1/server-groups").json() == []


def test_placement_follows_the_group_policy_across_hosts(state_dir: Path):
    with cluster(state_dir, ["h1", "h2"]) as ctl:
        apart = ctl.api.post("/v1/server-groups", json={"name": "apart", "policy": "anti-affinity"}).json()
        together = ctl.api.post("/v1/server-groups", json={"name": "together", "policy": "affinity"}).json()
        hosts = [ctl.create(f"p{k}", guest_command(f"p{k}"), server_group=apart["id"])["host"] for k in (1, 2)]
        assert sorted(hosts) == ["h1", "h2"]
        resp = ctl.api.post("/v1/instances", json={"name": "p3", "command": guest_command("p3"),
                                                   "server_group": apart["id"]})
        assert resp.status_code == 409 and "anti-affinity" in resp.text

        t1 = ctl.create("t1", guest_command("t1"), server_group=together["id"], host="h2")
        t2 = ctl.create("t2", guest_command("t2"), server_group=together["id"])
        assert t1["host"] == t2["host"] == "h2"
        resp = ctl.api.post("/v1/instances", json={"name": "t3", "command": guest_command("t3"),
                                                   "server_group": together["id"], "host": "h1"})
        assert resp.status_code == 422 and "affinity" in resp.text
        members = ctl.api.get(f"/v1/server-groups/{apart['id']}").json()["members"]
        assert {m["name"] for m in members} == {"p1", "p2"}
