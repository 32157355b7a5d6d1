"""Controller HA: three controllers on a real 3-member etcd cluster and a real PostgreSQL
(SLA-2, HOST-5, HOST-7, K8S-1..3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nfvha.hatest.harness import Receiver, Server, agent_dir, guest_command, wait_until
from nfvha.hatest.servers import Controllers, Etcd, Postgres, Relay
from nfvha.hatest.storm import storm
from nfvha.store.db import FencedError, claim, fence_sessions, open_store
from nfvha.store.models import Subscription

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    cluster = Etcd(3)
    yield cluster
    cluster.stop()


@pytest.fixture
def ctls(state_dir: Path, pg: Postgres, etcd: Etcd) -> Iterator[Controllers]:
    cluster = Controllers(state_dir, pg.database(), etcd.endpoints)
    yield cluster
    cluster.close()


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, follow_redirects=True)


def test_one_leader_acts_followers_redirect_and_everything_survives_its_death(
        ctls: Controllers, state_dir: Path, receiver: Receiver):
    lead = ctls.leader()
    follower = ctls.urls[(lead + 1) % 3]
    states = [api(u).get("/v1/controller").json() for u in ctls.urls]
    assert [s["leading"] for s in states].count(True) == 1  # never two
    assert all(s["leader"] == ctls.urls[lead] for s in states)

    # a change sent to a follower is redirected to the leader (307); reads are served anywhere
    raw = httpx.post(f"{follower}/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"})
    assert raw.status_code == 307 and raw.headers["location"].startswith(ctls.urls[lead])
    assert api(follower).post("/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"}).status_code == 201

    agent = Server(["agent", "--controller", ",".join(ctls.urls), "--host", "h1", "--state-dir",
                    str(agent_dir(state_dir, "h1"))], state_dir, url_pattern=None)
    try:
        wait_until(lambda: api(follower).get("/v1/hosts").json(), what="the agent at the leader")
        inst = api(follower).post("/v1/instances", json={"name": "i0", "command": guest_command("i0")}).json()
        wait_until(lambda: api(follower).get(f"/v1/instances/{inst['id']}").json()["heartbeat_status"]
                   == "heartbeating", what="heartbeating")
        pid = api(follower).get(f"/v1/instances/{inst['id']}").json()["pid"]

        ctls.servers[lead].proc.kill()  # the leader dies
        new = ctls.leader(but=ctls.urls[lead])
        assert new != lead
        wait_until(lambda: api(ctls.urls[new]).get("/v1/hosts").json()[0]["connected"], what="the agent follows")
        got = api(ctls.urls[new]).get(f"/v1/instances/{inst['id']}").json()
        assert got["pid"] == pid  # the agent reconnected; its instance ran on undisturbed

        # the new leader acts on the same store: a fault is recorded once and notified to the
        # subscription made through the old leader (HOST-7: nothing lived in the dead controller)
        client = api(",".join(ctls.urls).split(",")[lead - 1])
        assert client.post(f"/v1/instances/{inst['id']}/faults", json={"kind": "crash"}).status_code == 202
        wait_until(lambda: receiver.events("nfvha.instance.fault"), what="the fault notified")
        assert len(api(ctls.urls[new]).get("/v1/faults").json()) == 1

        # the CLI, given every controller, reaches one that works (the first is dead)
        out = subprocess.run([sys.executable, "-m", "nfvha.cli", "status", "--api", ",".join(ctls.urls)],
                             capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})
        assert out.returncode == 0 and "i0" in out.stdout, out.stdout + out.stderr
    finally:
        agent.stop()


def test_a_graceful_stop_hands_leadership_over_at_once(ctls: Controllers):
    lead = ctls.leader()
    at = time.monotonic()
    ctls.servers[lead].proc.send_signal(signal.SIGTERM)
    new = ctls.leader(but=ctls.urls[lead], timeout=5)
    took = time.monotonic() - at
    assert ctls.servers[lead].proc.wait(10) == 0
    assert new != lead and took < 1.0  # the lease is revoked, not left to expire (measured: bench/)


def test_a_leader_cut_off_from_etcd_steps_down_and_a_deposed_leader_cannot_write(
        state_dir: Path, pg: Postgres, etcd: Etcd):
    relays = [[Relay(("127.0.0.1", int(ep.rsplit(":", 1)[1]))) for ep in etcd.endpoints] for _ in range(3)]
    store = pg.database()
    ctls = Controllers(state_dir, store, [[f"127.0.0.1:{r.port}" for r in rs] for rs in relays])
    try:
        lead = ctls.leader()
        for relay in relays[lead]:
            relay.cut()
        cut_at = time.monotonic()
        wait_until(lambda: not api(ctls.urls[lead]).get("/v1/controller").json()["leading"], 5, "the step-down")
        stepped_down = time.monotonic() - cut_at
        new = ctls.leader(but=ctls.urls[lead])
        assert stepped_down < 1.0  # the lease TTL (1 s): before etcd could elect another
        assert [api(u).get("/v1/controller").json()["leading"] for u in ctls.urls].count(True) == 1
        assert api(ctls.urls[new]).get("/v1/controller").json()["token"] > 0
        for relay in relays[lead]:
            relay.mend()
        wait_until(lambda: api(ctls.urls[lead]).get("/v1/controller").json()["leader"] == ctls.urls[new],
                   10, "the old leader follows the new one")
    finally:
        ctls.close()
        for relay in (r for rs in relays for r in rs):
            relay.close()

    # the fencing token: a leader's write after its successor claimed the store is refused
    async def late_write() -> None:
        engine_a, old = await open_store(store)
        engine_b, new_ = await open_store(store)
        fence_sessions(old, lambda: 1000)
        fence_sessions(new_, lambda: 1001)
        await claim(old, 1000, "old")
        async with old() as s, s.begin():
            s.add(Subscription(id="before", url="http://x", secret="s", created_at=0.0))
        await claim(new_, 1001, "new")
        with pytest.raises(FencedError, match="superseded by 1001"):
            async with old() as s, s.begin():
                s.add(Subscription(id="late", url="http://x", secret="s", created_at=0.0))
        with pytest.raises(FencedError, match="older than the store's 1001"):
            await claim(old, 1000, "old")
        async with new_() as s:
            assert await s.get(Subscription, "late") is None and await s.get(Subscription, "before") is not None
        await engine_a.dispose()
        await engine_b.dispose()

    asyncio.run(late_write())


def test_the_cluster_keeps_its_quorum_when_an_etcd_member_dies(ctls: Controllers, etcd: Etcd):
    lead = ctls.leader()
    etcd.kill(etcd.names[0])
    try:
        ctls.servers[lead].proc.kill()
        new = ctls.leader(but=ctls.urls[lead])
        assert new != lead
    finally:
        etcd.start(etcd.names[0])
        wait_until(lambda: etcd.healthy(etcd.names[0]), 20, "the member back")


def test_a_fault_storm_across_a_leader_death_loses_nothing_and_stores_each_once(
        ctls: Controllers, receiver: Receiver):
    lead = ctls.leader()
    api(ctls.urls[lead]).post("/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"})
    def kill_leader() -> None:
        ctls.servers[ctls.leader()].proc.kill()

    ids = asyncio.run(storm(ctls.urls, 300, kill_leader, kill_after=[100]))
    wait_until(lambda: {e["data"]["fault_id"] for e in receiver.events("nfvha.instance.fault")} >= set(ids), 60,
               "every fault notified")
    stored = api(ctls.urls[ctls.leader()]).get("/v1/faults", params={"limit": 10_000}).json()
    assert sorted(f["id"] for f in stored) == sorted(ids)  # each once, none lost
