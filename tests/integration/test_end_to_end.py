"""nfvha up, end to end: real guest daemons over real sockets, faults injected through the
API, recorded with their times, notified to a real webhook receiver, recovered."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from nfvha.hatest.harness import Receiver, Server, guest_command, wait_until

HOSTILE = str(Path(__file__).with_name("hostile_guest.py"))


def test_hang_is_detected_as_heartbeat_timeout_notified_and_recovered_by_restart(nfvha: Server, receiver: Receiver):
    assert nfvha.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "s3cret"}).status_code == 201
    inst = nfvha.create("vnf-a", guest_command("vnf-a", 100))
    pid = nfvha.wait_heartbeating(inst["id"])["pid"]
    nfvha.inject(inst["id"], "hang")
    f = nfvha.wait_fault(inst["id"], lambda f: f["recovered_at"] and f["notified_at"])
    assert f["reason"] == "heartbeat_timeout" and f["fault_basis"] == "injected"
    assert f["detection_ms"] >= 100  # not before two challenges went unanswered; its p99 is bench/'s
    assert f["recovery_action"] == "restart" and f["recovery_state"] == "done"
    assert f["notification_ms"] is not None and f["recovery_ms"] is not None
    assert f["sla"]["level"] == "SAL1"
    after = nfvha.wait_heartbeating(inst["id"])
    assert after["pid"] != pid and after["state"] == "running"
    [event] = receiver.events("nfvha.instance.fault")
    assert event["subject"] == inst["id"] and event["data"]["reason"] == "heartbeat_timeout"
    assert event["data"]["fault_id"] == f["id"] and event["specversion"] == "1.0" and event["source"]
    wait_until(lambda: receiver.events("nfvha.instance.recovered"), what="the recovered event")
    assert all(r["signature_ok"] for r in receiver.received)
    metrics = nfvha.api.get("/metrics").text
    for line in ('nfvha_faults_total{reason="heartbeat_timeout"} 1.0', "nfvha_fault_detection_seconds_count 1.0",
                 "nfvha_fault_recovery_seconds_count 1.0", "nfvha_fault_notification_seconds_count 1.0",
                 'nfvha_webhook_deliveries_total{result="ok"} 2.0', "nfvha_agents_connected 1.0"):
        assert line in metrics, line


def test_crash_is_detected_from_the_exit_and_restarted(nfvha: Server):
    inst = nfvha.create("vnf-b", guest_command("vnf-b", 100))
    nfvha.wait_heartbeating(inst["id"])
    nfvha.inject(inst["id"], "crash")
    f = nfvha.wait_fault(inst["id"], lambda f: f["recovered_at"])
    assert f["reason"] == "instance_exit" and "signal 9" in f["detail"] and f["fault_basis"] == "injected"
    assert len(nfvha.faults(inst["id"])) == 1  # the channel closing with it is the same fault


def test_unhealthy_guest_is_a_fault_with_its_corrective_action(nfvha: Server):
    inst = nfvha.create("vnf-c", guest_command("vnf-c", 100, "--corrective-action", "log"))
    pid = nfvha.wait_heartbeating(inst["id"])["pid"]
    nfvha.inject(inst["id"], "unhealthy")
    f = nfvha.wait_fault(inst["id"])
    assert f["reason"] == "unhealthy" and f["corrective_action"] == "log"
    assert f["recovery_action"] == "none" and f["recovery_state"] == "none"
    assert "SIGUSR1" in f["detail"]
    time.sleep(0.5)
    assert nfvha.instance(inst["id"])["pid"] == pid  # `log`: the platform leaves it alone


def test_recovery_policy_stop_overrides_the_guest(nfvha: Server):
    inst = nfvha.create("vnf-d", guest_command("vnf-d", 100), recovery="stop")
    nfvha.wait_heartbeating(inst["id"])
    nfvha.inject(inst["id"], "hang")
    f = nfvha.wait_fault(inst["id"], lambda f: f["recovery_state"] == "done")
    assert f["recovery_action"] == "stop"
    assert nfvha.instance(inst["id"])["state"] == "stopped"


def test_demo_application_failure_is_reported_through_its_http_health_check(nfvha: Server):
    cmd = [sys.executable, "-m", "nfvha.guest.demo", "--channel", "unix:{channel}", "--interval-ms", "100"]
    inst = nfvha.create("demo-x", cmd, recovery="none")
    nfvha.wait_heartbeating(inst["id"])
    log = (nfvha.state_dir / "log" / f"{inst['id']}.log").read_text()
    assert "Traceback" not in log
    # the demo app is a separate HTTP server in the instance; break it through its own API
    port = _demo_port(inst["pid"])
    httpx.post(f"http://127.0.0.1:{port}/break")
    f = nfvha.wait_fault(inst["id"])
    assert f["reason"] == "unhealthy" and "HTTP 503" in f["detail"]


def _demo_port(pid: int) -> int:
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes and parts[3] == "0A":  # LISTEN
            return int(parts[1].split(":")[1], 16)
    raise AssertionError("demo app port not found")


def test_heartbeat_disabled_instance_crash_is_still_a_fault_and_restarted(nfvha: Server):
    inst = nfvha.create("plain", [sys.executable, "-c", "import time; time.sleep(600)"], heartbeat=False)
    assert inst["state"] == "running" and inst["heartbeat_status"] == "disabled"
    nfvha.inject(inst["id"], "crash")
    f = nfvha.wait_fault(inst["id"], lambda f: f["recovered_at"])
    assert f["reason"] == "instance_exit"
    assert nfvha.instance(inst["id"])["state"] == "running"


def test_guest_that_exits_gracefully_raises_no_fault(nfvha: Server):
    inst = nfvha.create("leaver", guest_command("leaver", 100))
    pid = nfvha.wait_heartbeating(inst["id"])["pid"]
    os.kill(pid, signal.SIGTERM)  # the guest says `exit`, then ends with status 0
    wait_until(lambda: nfvha.instance(inst["id"])["state"] == "stopped", what="instance stopped")
    assert nfvha.instance(inst["id"])["heartbeat_status"] == "exited"
    assert nfvha.faults(inst["id"]) == []


def test_guest_killed_without_exit_while_its_instance_lives_is_channel_lost(nfvha: Server):
    # the instance is a shell whose child is the guest daemon: killing the daemon alone
    # closes the channel while the instance process itself goes on
    cmd = ["sh", "-c", f"{sys.executable} -m nfvha.guest --channel unix:{{channel}} --interval-ms 100 & "
                       "echo $! > {channel}.pid; exec sleep 600"]
    inst = nfvha.create("half", cmd, recovery="none")
    nfvha.wait_heartbeating(inst["id"])
    channel = nfvha.state_dir / "ch" / f"{inst['id']}.sock"
    os.kill(int(Path(f"{channel}.pid").read_text()), signal.SIGKILL)
    f = nfvha.wait_fault(inst["id"])
    assert f["reason"] == "channel_lost"


def test_a_hostile_guest_costs_the_others_nothing(nfvha: Server):
    good = nfvha.create("good", guest_command("good", 100))
    nfvha.wait_heartbeating(good["id"])
    bad = nfvha.create("hostile", [sys.executable, HOSTILE, "{channel}"])
    # after its attacks it registers and heartbeats: the agent kept serving it
    nfvha.wait_heartbeating(bad["id"], timeout=30)
    errors = wait_until(lambda: (e := nfvha.instance(bad["id"])["protocol_errors"]).get("rate_limited") and e,
                        what="error counters")
    for reason in ("bad_json", "too_long", "not_object", "bad_field", "unknown_app", "unknown_msg_type",
                   "bad_version", "rate_limited"):
        assert errors.get(reason), f"{reason} not counted: {errors}"
    assert nfvha.faults(good["id"]) == [] and nfvha.faults(bad["id"]) == []
    metrics = nfvha.api.get("/metrics").text
    assert f'nfvha_guest_protocol_errors{{instance="{bad["id"]}",reason="rate_limited"}}' in metrics
    assert nfvha.instance(good["id"])["protocol_errors"] == {}
    assert nfvha.api.get("/v1/hosts").json()[0]["connected"]


def test_bad_api_requests_get_4xx_naming_the_field(nfvha: Server):
    api = nfvha.api
    cases = [
        (api.post("/v1/instances", json={"name": "x" * 65, "command": ["true"]}), 422, "name"),
        (api.post("/v1/instances", json={"name": "ok", "command": []}), 422, "command"),
        (api.post("/v1/instances", json={"name": "ok", "command": "true"}), 422, "command"),
        (api.post("/v1/instances", json={"name": "ok", "command": ["true"], "heartbeat": "maybe"}), 422, "heartbeat"),
        (api.post("/v1/instances", json={"name": "ok", "command": ["true"], "colour": "red"}), 422, "colour"),
        (api.post("/v1/instances", json={"name": "ok", "command": ["/no/such/binary"]}), 422, "command"),
        (api.post("/v1/instances", json={"name": "ok", "command": ["true"], "host": "elsewhere"}), 422, "host"),
        (api.post("/v1/instances", content=b"{", headers={"content-type": "application/json"}), 422, "body"),
        (api.post("/v1/subscriptions", json={"url": "not a url", "secret": "s"}), 422, "url"),
        (api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:1/", "secret": ""}), 422, "secret"),
        (api.post("/v1/instances/nope/faults", json={"kind": "hang"}), 404, "nope"),
        (api.get("/v1/faults", params={"limit": 0}), 422, "limit"),
        (api.delete("/v1/subscriptions/nope"), 404, "nope"),
        # a VM on a process-driver host; a VM that would read the host's root, on an agent not allowing it
        (api.post("/v1/instances", json={"name": "ok", "vm": {"kernel": sys.executable}}), 422, "runs a command"),
        (api.post("/v1/instances", json={"name": "ok", "vm": {"kernel": sys.executable, "share_host_root": True}}),
         422, "--allow-host-root"),
    ]
    for resp, status, field in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert field in resp.text, (field, resp.text)
    assert api.get("/v1/instances").json() == []  # nothing was created by any of them
    inst = nfvha.create("dup", guest_command("dup"))
    resp = api.post("/v1/instances", json={"name": "dup", "command": ["true"]})
    assert resp.status_code == 409 and "name" in resp.text
    resp = api.post(f"/v1/instances/{inst['id']}/faults", json={"kind": "meltdown"})
    assert resp.status_code == 422 and "kind" in resp.text


def test_openapi_document_describes_the_contract(nfvha: Server):
    doc = nfvha.api.get("/openapi.json").json()
    for path in ("/v1/instances", "/v1/instances/{instance_id}", "/v1/instances/{instance_id}/faults",
                 "/v1/faults", "/v1/subscriptions", "/v1/events", "/v1/hosts"):
        assert path in doc["paths"], path


def test_webhook_is_retried_until_the_receiver_accepts_it(nfvha: Server):
    slow = Receiver("k", fail_first=2)
    try:
        nfvha.api.post("/v1/subscriptions", json={"url": slow.url, "secret": "k"})
        inst = nfvha.create("retry", [sys.executable, "-c", "import time; time.sleep(600)"], heartbeat=False)
        nfvha.inject(inst["id"], "crash")
        f = nfvha.wait_fault(inst["id"], lambda f: f["notified_at"])
        assert slow.refused == 2 and f["notification_ms"] >= 100  # two backoffs of 0.1 s and 0.2 s
        [event] = slow.events("nfvha.instance.fault")
        assert event["data"]["fault_id"] == f["id"] and slow.received[0]["signature_ok"]
    finally:
        slow.httpd.shutdown()


def test_live_event_stream_carries_fault_events(nfvha: Server):
    seen: list[dict] = []
    attached = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", nfvha.url + "/v1/events", timeout=20) as resp:
            for line in resp.iter_lines():
                attached.set()  # the stream opens with a comment line
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    inst = nfvha.create("streamed", [sys.executable, "-c", "import time; time.sleep(600)"], heartbeat=False)
    assert attached.wait(10)
    nfvha.inject(inst["id"], "crash")
    t.join(15)
    assert seen and seen[0]["type"] == "nfvha.instance.fault" and seen[0]["subject"] == inst["id"]


def test_cli_shows_status_and_faults(nfvha: Server):
    import subprocess

    inst = nfvha.create("cli-a", [sys.executable, "-c", "import time; time.sleep(600)"], heartbeat=False)
    env = {**os.environ, "NFVHA_API": nfvha.url, "COLUMNS": "200"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "nfvha.cli", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=30)
    out = run("fault", "inject", "cli-a", "crash")
    assert out.returncode == 0, out.stderr
    nfvha.wait_fault(inst["id"], lambda f: f["recovered_at"])
    listed = json.loads(run("faults", "--json").stdout)
    assert listed == nfvha.faults()
    status = run("status").stdout
    assert "cli-a" in status and "instance_exit" in status
    bad = run("fault", "inject", "nobody", "crash")
    assert bad.returncode == 1 and "no instance" in bad.stdout


def test_shutdown_stops_the_instances(state_dir: Path):
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state_dir), "--demo", "2"], state_dir)
    pids = [i["pid"] for i in srv.api.get("/v1/instances").json()]
    assert len(pids) == 2 and all(pids)
    assert srv.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_port_in_use_an_impossible_state_dir_or_an_old_store_is_one_clear_line(state_dir: Path):
    import socket
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "nfvha.cli", "up", "--api", f"127.0.0.1:{port}",
                              "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "Address already in use" in out.stdout and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "nfvha.cli", "up", "--api", "127.0.0.1:0", "--state-dir",
                          "/proc/nfvha-cannot-be-here"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "/proc/nfvha-cannot-be-here" in out.stdout and "Traceback" not in out.stderr
    # a store written by an nfvha from before schema migrations: named, and left as it was
    import sqlite3

    old = state_dir / "old"
    old.mkdir()
    with sqlite3.connect(old / "nfvha.db") as db:
        db.execute("CREATE TABLE instances (id VARCHAR(64) PRIMARY KEY, name VARCHAR(64))")
        db.execute("INSERT INTO instances VALUES ('i1', 'kept')")
    out = subprocess.run([sys.executable, "-m", "nfvha.cli", "controller", "--api", "127.0.0.1:0", "--state-dir",
                          str(old)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "older nfvha" in out.stdout and "before schema migrations" in out.stdout
    assert "Traceback" not in out.stderr
    with sqlite3.connect(old / "nfvha.db") as db:
        assert db.execute("SELECT name FROM instances").fetchall() == [("kept",)]
