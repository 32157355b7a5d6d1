"""A host's liveness as the controller judges it (pure: times are passed in).

    up ──silent `suspect_after` s, or its connection closed──▶ suspect ──probe──▶ quiet | down
    quiet (the host answers, its agent does not) ──silent `agent_down_after` s──▶ agent_down
    quiet, agent_down ──re-probed every `recheck` s, no answer──▶ down
    any state ──a heartbeat──▶ up

The probe is the host's second witness (nfvha.hostmon) on another network: its answer tells
"the agent is down but the host runs" (HOST-2) from "the host is down". A host that answers
is given `agent_down_after` seconds before its agent is announced down: a busy agent that
comes back by then was never news.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LivenessConfig:
    suspect_after: float = 0.4  # seconds without a heartbeat (agents send one every 0.1 s)
    probe_window: float = 0.3  # seconds the second witness has to answer
    recheck: float = 0.5  # the host answered: how often to ask again whether it still runs
    agent_down_after: float = 2.0  # seconds of an agent's silence, its host answering, to announce it


class HostLiveness:
    def __init__(self, config: LivenessConfig, last_beat: float, connected: bool = True) -> None:
        self.config = config
        self.state = "up"
        self.last_beat = last_beat
        self.connected = connected
        self._next_probe = 0.0

    def beat(self, now: float) -> str | None:
        """A sign of life; returns "up" if the host had been announced down or agent_down."""
        self.last_beat, self.connected = now, True
        was, self.state = self.state, "up"
        return "up" if was in ("agent_down", "down") else None

    def paused(self, duration: float) -> None:
        """The observer itself did not run for `duration` seconds (a stalled controller):
        heartbeats may wait unread, so that time does not count as the host's silence."""
        self.last_beat += duration

    def lost(self) -> None:
        """The agent's connection closed: suspect the host at once, not after the silence."""
        self.connected = False

    def tick(self, now: float) -> str | None:
        """What to do now: "probe" the host, announce "agent_down", or nothing."""
        if self.state == "up" and (not self.connected or now - self.last_beat > self.config.suspect_after):
            self.state = "suspect"
            return "probe"
        if self.state == "quiet" and now - self.last_beat >= self.config.agent_down_after:
            self.state = "agent_down"
            return "agent_down"
        if self.state in ("quiet", "agent_down") and now >= self._next_probe:
            self._next_probe = now + self.config.recheck
            return "probe"
        return None

    def probed(self, alive: bool, now: float) -> str | None:
        """The probe's outcome; returns "down" when the host is found down."""
        if self.state not in ("suspect", "quiet", "agent_down"):
            return None  # a heartbeat came meanwhile
        if not alive:
            self.state = "down"
            return "down"
        if self.state == "suspect":
            self.state, self._next_probe = "quiet", now + self.config.recheck
        return None
