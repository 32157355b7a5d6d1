"""The pure parts of controller clustering: where a refused agent goes, and the embedded leader."""

from __future__ import annotations

from nfvha.agent.link import agent_url, redirect
from nfvha.controller.leadership import Solo


def test_a_refused_agent_goes_to_the_leader_its_follower_named():
    assert agent_url("http://10.0.0.2:7470/") == "ws://10.0.0.2:7470/v1/agent"
    assert agent_url("https://ctl.example") == "wss://ctl.example/v1/agent"
    assert redirect(4001, "not the leader; leader: http://10.0.0.2:7470") == "ws://10.0.0.2:7470/v1/agent"
    assert redirect(4001, "not the leader; leader: none yet") is None  # try the next one
    assert redirect(1000, "leader: http://10.0.0.2:7470") is None  # only the refusal code counts
    assert redirect(None, None) is None


async def test_the_embedded_controller_leads_alone():
    solo = Solo("http://127.0.0.1:7470")
    assert await solo.campaign() == 1 and solo.token == 1
    await solo.resign()
    assert solo.token is None and solo.leader_url == "http://127.0.0.1:7470"
