"""`nfvha controller` and `nfvha agent` as separate processes, as on a real deployment."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from nfvha.hatest.harness import Server, guest_command, wait_until


def host_connected(api: httpx.Client, name: str) -> bool:
    try:
        return any(h["name"] == name and h["connected"] for h in api.get("/v1/hosts").json())
    except httpx.HTTPError:
        return False


def test_a_fault_detected_while_the_controller_is_down_is_delivered_when_it_returns(state_dir: Path):
    ctl = Server(["controller", "--api", "127.0.0.1:0", "--state-dir", str(state_dir / "ctl")], state_dir)
    agent = Server(["agent", "--controller", ctl.url, "--host", "h1", "--state-dir", str(state_dir / "agent")],
                   state_dir, url_pattern=None)
    try:
        wait_until(lambda: host_connected(ctl.api, "h1"), what="agent h1 connected")
        inst = ctl.create("split", guest_command("split", 100))
        assert inst["host"] == "h1"
        pid = ctl.wait_heartbeating(inst["id"])["pid"]

        ctl.stop(signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)  # the agent sees it; nobody is there to tell
        port = ctl.url.rsplit(":", 1)[1]
        ctl = Server(["controller", "--api", f"127.0.0.1:{port}", "--state-dir", str(state_dir / "ctl")],
                     state_dir)
        f = ctl.wait_fault(inst["id"], lambda f: f["recovered_at"], timeout=20)
        assert f["reason"] == "instance_exit" and f["fault_basis"] == "observed"
        assert len(ctl.faults(inst["id"])) == 1  # re-sent until acknowledged, stored once
        assert ctl.wait_heartbeating(inst["id"])["pid"] != pid

        agent.stop()
        wait_until(lambda: not host_connected(ctl.api, "h1"), what="h1 disconnected")
        assert ctl.api.post("/v1/instances", json={"name": "x", "command": ["true"]}).status_code == 503
    finally:
        agent.stop()
        ctl.stop()
