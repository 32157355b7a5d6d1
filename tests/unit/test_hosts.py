"""Host liveness, fencing and evacuation choices: pure logic, and the probe over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest

from nfvha import hostmon
from nfvha.control import InstanceSpec
from nfvha.controller.fencing import FenceError, IpmiFence, NetnsFence, NoFence, make_fence, powered_off
from nfvha.controller.liveness import HostLiveness, LivenessConfig
from nfvha.controller.placement import PlacementError, choose_host, recovery_tiers
from nfvha.controller.replicas import plan
from nfvha.virt.process import ProcessDriver

CFG = LivenessConfig(suspect_after=0.4, probe_window=0.3, recheck=0.5, agent_down_after=2.0)


def test_silence_makes_a_suspect_and_the_probe_tells_agent_down_from_down():
    live = HostLiveness(CFG, last_beat=0.0)
    assert live.tick(0.39) is None and live.state == "up"
    assert live.tick(0.41) == "probe" and live.state == "suspect"
    assert live.tick(0.42) is None  # one probe at a time
    assert live.probed(True, 0.5) is None and live.state == "quiet"  # the host answers: not news yet
    assert live.tick(0.9) is None and live.tick(1.01) == "probe"  # re-probed every `recheck`
    assert live.probed(True, 1.1) is None
    assert live.tick(2.0) == "agent_down"  # silent for agent_down_after, its host answering
    assert live.tick(2.1) == "probe" and live.probed(True, 2.2) is None and live.state == "agent_down"
    assert live.tick(2.7) == "probe" and live.probed(False, 3.0) == "down"
    assert live.tick(10.0) is None  # down stays down until it beats again
    assert live.beat(11.0) == "up" and live.state == "up"


def test_a_busy_agent_back_within_its_grace_was_never_news():
    live = HostLiveness(CFG, last_beat=0.0)
    live.lost()
    assert live.tick(0.01) == "probe" and live.state == "suspect"  # a closed connection: at once
    assert live.beat(0.05) is None  # never announced: nothing to take back
    assert live.probed(False, 0.3) is None and live.state == "up"  # a late probe changes nothing
    assert live.tick(0.5) == "probe" and live.probed(True, 0.6) is None
    assert live.beat(1.5) is None and live.state == "up"  # back before agent_down_after


def test_the_controller_s_own_stall_is_not_the_host_s_silence():
    live = HostLiveness(CFG, last_beat=0.0)
    live.paused(0.3)
    assert live.tick(0.6) is None and live.tick(0.71) == "probe"


def test_recovery_methods_order_the_hosts_tried():
    assert recovery_tiers("auto", ["a"], ["r"]) == [["a"]]
    assert recovery_tiers("reserved_host", ["a"], ["r"]) == [["r"]]
    assert recovery_tiers("auto_priority", ["a"], ["r"]) == [["a"], ["r"]]
    assert recovery_tiers("rh_priority", ["a"], ["r"]) == [["r"], ["a"]]


def test_placement_takes_the_least_loaded_host():
    assert choose_host(["h1", "h2", "h3"], [], load={"h1": 3, "h2": 1, "h3": 1}) == "h2"
    assert choose_host(["h1", "h2", "h3"], ["h2"], "anti-affinity", load={"h1": 5, "h3": 9}) == "h1"
    with pytest.raises(PlacementError):
        choose_host(["h2"], ["h2"], "anti-affinity", load={})


def test_replica_plans_make_the_set_exactly_n():
    assert plan("r", 3, ["r-1"]) == (["r-0", "r-2"], [])
    assert plan("r", 1, ["r-0", "r-1", "r-7"]) == ([], ["r-1", "r-7"])
    assert plan("r", 0, []) == ([], [])


def test_ipmi_fence_builds_its_commands_from_a_checked_config(tmp_path: Path):
    cfg = tmp_path / "bmc.json"
    cfg.write_text(json.dumps({"h1": {"address": "10.0.0.5", "user": "admin", "password_file": "/etc/pw"}}))
    fence = IpmiFence(cfg)
    assert fence.argv("h1", "chassis", "power", "off") == [
        "ipmitool", "-I", "lanplus", "-H", "10.0.0.5", "-U", "admin", "-f", "/etc/pw", "chassis", "power", "off"]
    with pytest.raises(FenceError, match="no BMC for host h2"):
        fence.argv("h2", "chassis", "power", "status")
    assert powered_off("Chassis Power is off\n") and not powered_off("Chassis Power is on")
    cfg.write_text(json.dumps({"h1": {"address": "10.0.0.5"}}))
    with pytest.raises(ValueError, match="h1 lacks password_file, user"):
        IpmiFence(cfg)
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="fence config"):
        IpmiFence(cfg)
    with pytest.raises(ValueError, match="--fence-config"):
        make_fence("ipmi")
    with pytest.raises(ValueError, match="none, netns or ipmi"):
        make_fence("stonith")


async def test_fence_drivers_that_cannot_confirm_off_fail(tmp_path: Path):
    with pytest.raises(FenceError, match="no fence driver"):
        await NoFence().power_off("h1")
    with pytest.raises(FenceError, match="no network namespace nfvha-nowhere"):
        await NetnsFence().power_off("nowhere")
    cfg = tmp_path / "bmc.json"
    cfg.write_text(json.dumps({"h1": {"address": "x", "user": "u", "password_file": "p"}}))
    with pytest.raises(FenceError, match="cannot run /nonexistent/ipmitool"):
        await IpmiFence(cfg, ipmitool="/nonexistent/ipmitool").power_off("h1")


async def test_hostmon_answers_probes_and_ignores_anything_else():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = asyncio.create_task(hostmon.serve("127.0.0.1", port))
    await asyncio.sleep(0.05)
    try:
        assert await hostmon.probe("127.0.0.1", port, window=0.5)
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.connect(("127.0.0.1", port))
        for junk in (b"", b"hello", hostmon.PROBE, hostmon.PROBE + b"x" * 100):
            client.send(junk)
        client.send(hostmon.PROBE + b"ok")
        assert await asyncio.wait_for(loop.sock_recv(client, 100), 1.0) == hostmon.ALIVE + b"ok"  # only that one
        client.close()
    finally:
        server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    assert not await hostmon.probe("127.0.0.1", port, window=0.2)  # nobody answers: no witness


async def test_a_new_driver_adopts_the_process_an_old_one_left_running(tmp_path: Path):
    exits = []
    old = ProcessDriver(tmp_path, lambda iid, ex: exits.append(ex))
    spec = InstanceSpec(id="i1", name="i1", command=[sys.executable, "-c", "import time; time.sleep(60)"])
    await old.start("i1", spec)
    pid = old.pid("i1")
    new = ProcessDriver(tmp_path, lambda iid, ex: exits.append(ex))  # the next agent
    await new.start("i1", spec)
    assert new.pid("i1") == pid and exits == []
    await new.kill("i1")
    assert exits and not exits[0].clean and "adopted" in exits[0].detail
    (tmp_path / "run" / "i1.pid").write_text(f"{pid} 1\n")  # a stale file: that pid is not that process
    await new.start("i1", spec)
    assert new.pid("i1") != pid
    await new.close()
