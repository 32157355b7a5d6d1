"""The agent: runs this host's instances through a virt driver, watches them, reports faults.

Fault rules kept here (the protocol's own are in nfvha.wire):
- one open fault per instance: later symptoms of the same failure (the channel closing
  when the process dies, misses of a frozen guest) are not new faults until it recovers;
- a channel lost while the process is dying is the process's exit: EOF waits
  `exit_grace` for the exit before it counts as `channel_lost`;
- nothing the platform itself does (stop, restart, remove) is a fault, nor a guest that
  said `exit` and then ended with status 0;
- a fault injected through the API happened at its injection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..control import (
    Command,
    Deliver,
    FaultReport,
    GroupMessage,
    Hello,
    HostBeat,
    InstanceSpec,
    InstanceStatus,
    RecoveredReport,
    Result,
    StateReport,
    Welcome,
)
from ..virt.base import Driver, DriverError, Exit
from ..wire import heartbeat as hb
from ..wire import server_group as sg
from ..wire.messages import to_data
from .link import ControllerLink
from .session import ChannelSession

log = logging.getLogger("nfvha.agent")
INJECTION_WINDOW = 30.0  # a fault this long after an injection is not the injection's
MAX_VOTE_WAIT = 20.0  # seconds: a vote must end well within the controller's command timeout
NOTICE_WAIT = 0.5  # seconds a responsive guest has to take note of an irrevocable action
ACTION_EVENTS = {"stop": "stop", "restart": "reboot"}


class VoteRejectedError(DriverError):
    """The guest vetoed a revocable action; the message is its reason."""


@dataclass
class AgentConfig:
    host: str
    state_dir: Path
    controller: str  # ws://HOST:PORT/v1/agent; a cluster's, comma-separated
    miss_threshold: int = 2
    min_interval_ms: int = 50
    rate: float = 100.0  # frames per second a guest may send, with `burst` in reserve
    burst: float = 200.0
    exit_grace: float = 0.02
    driver: str = "process"  # process | qemu | libvirt
    accel: str = "tcg"  # qemu: tcg or kvm
    libvirt_uri: str = "qemu:///system"
    allow_host_root: bool = False  # VMs may mount this host's / read-only (test and demo images)
    beat_interval: float = 0.1  # seconds between host heartbeats to the controller
    probe: str | None = None  # where this host's `nfvha hostmon` answers the controller's probes
    capacity: int | None = None  # instances this host can run: no limit, or what an operator set


@dataclass
class Local:
    spec: InstanceSpec
    state: str = "stopped"
    heartbeat: str = "disabled"
    session: ChannelSession | None = None
    task: asyncio.Task | None = None
    open_fault: str | None = None
    injected_at: float | None = None
    platform_action: bool = False
    guest_exited: bool = False
    lost_timer: asyncio.TimerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    votes: dict[str, asyncio.Future] = field(default_factory=dict)  # by invocation id


def make_driver(config: AgentConfig, on_exit: Callable[[str, Exit], None]) -> Driver:
    if config.driver == "qemu":
        from ..virt.qemu import QemuDriver
        return QemuDriver(config.state_dir, on_exit, accel=config.accel)
    if config.driver == "libvirt":
        from ..virt.libvirt import LibvirtDriver
        return LibvirtDriver(config.state_dir, on_exit, uri=config.libvirt_uri,
                             domain_type="kvm" if config.accel == "kvm" else "qemu")
    from ..virt.process import ProcessDriver
    return ProcessDriver(config.state_dir, on_exit)


def raise_fd_limit() -> None:
    """Each instance holds a pidfd and a channel socket: take the hard limit, not the soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.driver = make_driver(config, self._on_exit)
        self.instances: dict[str, Local] = {}
        self.link = ControllerLink(config.controller, self._hello, self._on_welcome, self._on_command,
                                   self._on_deliver)
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Run until cancelled; then stop this host's instances (they are the agent's children)."""
        raise_fd_limit()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self.link.run())
                tg.create_task(self._state_loop())
                tg.create_task(self._beat_loop())
        finally:  # the task group has ended every session; now the instances
            for local in self.instances.values():
                local.platform_action = True
            await asyncio.shield(self.driver.close())

    # ---- what the controller sees ------------------------------------------------------

    def status(self, local: Local) -> InstanceStatus:
        s = local.session
        return InstanceStatus(id=local.spec.id, state=local.state, heartbeat=local.heartbeat,
                              pid=self.driver.pid(local.spec.id), interval_ms=s.interval_ms if s else None,
                              protocol_errors=dict(s.errors) if s else {})

    def _hello(self) -> Hello:
        return Hello(host=self.config.host, driver=self.driver.name,
                     instances=[self.status(x) for x in self.instances.values()], discovered=self._discover(),
                     probe=self.config.probe, capacity=self.config.capacity)

    def _discover(self) -> dict[str, bool]:
        try:
            return self.driver.discover()
        except DriverError as exc:
            log.error("cannot list this host's domains: %s", exc)
            return {}

    def _publish(self, local: Local) -> None:
        self.link.send(StateReport(instance=self.status(local)))

    async def _beat_loop(self) -> None:
        """The host's heartbeat: the controller suspects the host when these stop."""
        beat = HostBeat()
        while True:
            await asyncio.sleep(self.config.beat_interval)
            self.link.send(beat)

    async def _state_loop(self) -> None:
        """Protocol error counters change without state changes: publish them when they do."""
        last: dict[str, dict[str, int]] = {}
        while True:
            await asyncio.sleep(1.0)
            for iid, local in self.instances.items():
                errs = dict(local.session.errors) if local.session else {}
                if errs != last.get(iid, {}):
                    last[iid] = errs
                    self._publish(local)

    # ---- commands ----------------------------------------------------------------------

    async def _on_welcome(self, welcome: Welcome) -> None:
        """Reconcile with the controller's view: start what is missing, drop what is not wanted."""
        wanted = {spec.id: spec for spec in welcome.instances}
        for iid in [i for i in self.instances if i not in wanted]:
            await self.remove(iid)
        for spec in wanted.values():
            if spec.id not in self.instances:
                try:
                    await self.ensure(spec)
                except DriverError as exc:
                    log.error("cannot start instance %s: %s", spec.id, exc)

    def _on_command(self, cmd: Command) -> None:
        assert self._tg is not None
        self._tg.create_task(self._execute(cmd))

    async def _execute(self, cmd: Command) -> None:
        try:
            data = await self.execute(cmd)
            result = Result(id=cmd.id, ok=True, data=data or {})
        except VoteRejectedError as exc:
            result = Result(id=cmd.id, ok=False, error=str(exc), data={"rejected": True})
        except (DriverError, KeyError) as exc:
            result = Result(id=cmd.id, ok=False, error=str(exc))
        except Exception as exc:  # a bulkhead: one instance's failed command must not stop the agent
            log.exception("command %s on instance %s failed", cmd.op, cmd.instance_id)
            result = Result(id=cmd.id, ok=False, error=f"internal error: {exc!r}")
        self.link.send(result)

    async def execute(self, cmd: Command) -> dict | None:
        if cmd.op == "ensure":
            assert cmd.spec is not None
            return await self.ensure(cmd.spec)
        if cmd.instance_id not in self.instances:
            if cmd.op == "remove":
                return None
            raise KeyError(f"instance {cmd.instance_id} is not on host {self.config.host}")
        if cmd.op in ACTION_EVENTS:
            local = self.instances[cmd.instance_id]
            if cmd.vote:
                reason = await self.vote(local, ACTION_EVENTS[cmd.op])
                if reason is not None:
                    raise VoteRejectedError(f"rejected by the guest: {reason}")
            elif cmd.notice:
                await self.notice(local, ACTION_EVENTS[cmd.op])
        if cmd.op == "remove":
            await self.remove(cmd.instance_id)
        elif cmd.op == "restart":
            await self.restart(cmd.instance_id, graceful=cmd.graceful)
        elif cmd.op == "stop":
            await self.stop(cmd.instance_id)
        elif cmd.op == "start":
            await self.start(cmd.instance_id)
        elif cmd.op == "inject":
            assert cmd.kind is not None
            return await self.inject(cmd.instance_id, cmd.kind)
        return self.status(self.instances[cmd.instance_id]).model_dump()

    # ---- lifecycle votes and notices ----------------------------------------------------

    def _registered(self, local: Local) -> hb.Init | None:
        chan = local.session.chan if local.session else None
        if chan is None or chan.heartbeat.state not in ("heartbeating", "faulted"):
            return None
        return chan.heartbeat.init

    async def _notify(self, local: Local, event_type: str, kind: str, wait: float) -> hb.ActionResponse | None:
        """Send `action_notify` and wait up to `wait` seconds for the guest's answer."""
        assert local.session is not None
        invocation = uuid.uuid4().hex
        fut = local.votes[invocation] = asyncio.get_running_loop().create_future()
        try:
            local.session.send("heartbeat", to_data(hb.ActionNotify(invocation, event_type, kind,
                                                                    round(wait * 1000))))
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            return None
        finally:
            local.votes.pop(invocation, None)

    async def vote(self, local: Local, event_type: str) -> str | None:
        """Ask the guest whether `event_type` may happen: its reason if it rejects, None if it
        accepts or stays silent for its `vote_secs` (silence is consent; so is no guest)."""
        init = self._registered(local)
        if init is None:
            return None
        answer = await self._notify(local, event_type, "revocable", min(init.vote_secs, MAX_VOTE_WAIT))
        if answer is not None and answer.vote_result == "reject":
            return answer.log_msg or "no reason given"
        return None

    async def notice(self, local: Local, event_type: str) -> None:
        """Tell the guest what is about to happen, without asking (a repair it cannot veto).
        A guest that still reads its channel gets a moment to take note; a silent one, none."""
        if self._registered(local) is not None:
            assert local.session is not None and local.session.chan is not None
            wait = NOTICE_WAIT if local.session.chan.heartbeat.responsive else 0.0
            await self._notify(local, event_type, "irrevocable", wait)

    async def ensure(self, spec: InstanceSpec) -> dict:
        local = self.instances.get(spec.id)
        if local is None:
            if spec.heartbeat:
                self.driver.channel_path(spec.id)  # a path too long for a socket fails here, not in the session
            local = self.instances[spec.id] = Local(spec=spec)
            if spec.heartbeat:
                local.session = ChannelSession(
                    spec.id, self.driver.channel_path, self._on_wire_event,
                    miss_threshold=self.config.miss_threshold, min_interval_ms=self.config.min_interval_ms,
                    rate=self.config.rate, burst=self.config.burst)
                assert self._tg is not None
                local.task = self._tg.create_task(local.session.run())
        if not self.driver.running(spec.id):
            await self.start(spec.id)
        return self.status(local).model_dump()

    async def start(self, iid: str) -> None:
        local = self.instances[iid]
        try:
            if local.spec.vm and local.spec.vm.share_host_root and not self.config.allow_host_root:
                raise DriverError("vm.share_host_root: this agent does not share its root filesystem with VMs "
                                  "(run it with --allow-host-root, for test and demo images only)")
            await self.driver.start(iid, local.spec)
        except DriverError:
            local.state = "failed"
            self._publish(local)
            raise
        local.state, local.guest_exited = "running", False
        local.heartbeat = "connecting" if local.session else "disabled"
        if local.session:
            local.session.expect_stop(False)
            local.session.kick()
        elif local.open_fault:
            self._recovered(local, time.monotonic())  # no heartbeat: running again is recovered
        self._publish(local)

    async def stop(self, iid: str, graceful: bool = True) -> None:
        local = self.instances[iid]
        local.platform_action = True
        if local.session:
            local.session.expect_stop()
        try:
            if graceful:
                await self.driver.stop(iid)
            else:
                await self.driver.kill(iid)
        finally:
            local.platform_action = False
        local.state = "stopped"
        local.heartbeat = "stopped" if local.session else "disabled"
        self._publish(local)

    async def restart(self, iid: str, graceful: bool = True) -> None:
        local = self.instances[iid]
        async with local.lock:  # a second restart while one runs would start a second process
            await self.stop(iid, graceful)
            await self.start(iid)

    async def remove(self, iid: str) -> None:
        local = self.instances.get(iid)
        if local is None:
            return
        local.platform_action = True
        if local.session:
            local.session.expect_stop()
        await self.driver.remove(iid)
        if local.task:
            local.task.cancel()
        if local.lost_timer:
            local.lost_timer.cancel()
        del self.instances[iid]

    async def inject(self, iid: str, kind: str) -> dict:
        local = self.instances[iid]
        at = time.monotonic()
        await self.driver.inject(iid, kind)
        local.injected_at = at
        return {"kind": kind}

    # ---- events ------------------------------------------------------------------------

    def _on_exit(self, iid: str, ex: Exit) -> None:
        local = self.instances.get(iid)
        if local is None:
            return
        local.state = "exited"
        if local.lost_timer:
            local.lost_timer.cancel()
            local.lost_timer = None
        if local.platform_action:
            return
        if local.guest_exited and ex.clean:
            local.state = "stopped"
            self._publish(local)
            return
        self._fault(local, "instance_exit", ex.detail, "reboot", ex.at, ex.at)
        self._publish(local)  # after the report: the fault is stored before the state that follows it

    def _on_deliver(self, msg: Deliver) -> None:
        for item in msg.items:
            local = self.instances.get(item.instance_id)
            if local is not None and local.session is not None:
                local.session.send("server_group", item.data)

    def _on_wire_event(self, iid: str, ev: object, now: float) -> None:
        local = self.instances.get(iid)
        if local is None:
            return
        if isinstance(ev, (sg.Broadcast, sg.StatusQuery)):
            self.link.send(GroupMessage(instance_id=iid, data=to_data(ev)))
            return
        if isinstance(ev, hb.ActionResponse):
            fut = local.votes.get(ev.invocation_id)
            if fut is not None and not fut.done():
                fut.set_result(ev)
            elif local.session is not None and local.session.chan is not None:
                local.session.chan.errors["unknown_vote"] += 1  # no vote of ours, or too late
            return
        if isinstance(ev, hb.Registered):
            local.heartbeat, local.guest_exited = "waiting", False
        elif isinstance(ev, hb.Healthy):
            local.heartbeat = "heartbeating"
            if local.open_fault:
                self._recovered(local, ev.at)
        elif isinstance(ev, hb.Exited):
            local.heartbeat, local.guest_exited = "exited", True
        elif isinstance(ev, hb.Fault):
            local.heartbeat = "faulted"
            if ev.reason == "channel_lost":
                # the process may be dying: let its exit, due within milliseconds, name the fault
                local.heartbeat = "connecting"
                local.lost_timer = asyncio.get_running_loop().call_later(
                    self.config.exit_grace, self._channel_lost, local, ev, now)
            else:
                self._fault(local, ev.reason, ev.detail, ev.corrective_action, now, ev.last_ok_at)
        self._publish(local)

    def _channel_lost(self, local: Local, ev: hb.Fault, at: float) -> None:
        local.lost_timer = None
        # a process that is gone or on its way out: its exit, due any moment, is the fault
        if not local.platform_action and not self.driver.exiting(local.spec.id):
            self._fault(local, "channel_lost", ev.detail, ev.corrective_action, at, ev.last_ok_at)

    def _fault(self, local: Local, reason: str, detail: str, action: str, detected: float,
               last_ok: float | None) -> None:
        if local.open_fault:
            return  # a further symptom of the open fault
        basis, happened = None, None
        if local.injected_at is not None and 0 <= detected - local.injected_at < INJECTION_WINDOW:
            basis, happened = "injected", local.injected_at
        elif reason == "instance_exit":
            basis, happened = "observed", detected
        elif last_ok is not None:
            basis, happened = "last_ok", last_ok
        local.injected_at = None
        local.open_fault = uuid.uuid4().hex
        log.warning("instance %s (%s): %s: %s", local.spec.name, local.spec.id, reason, detail)
        self.link.report(FaultReport(id=local.open_fault, instance_id=local.spec.id, reason=reason, detail=detail,
                                     corrective_action=action, fault_mono=happened, fault_basis=basis,
                                     detected_mono=detected))

    def _recovered(self, local: Local, at: float) -> None:
        assert local.open_fault is not None
        self.link.report(RecoveredReport(id=uuid.uuid4().hex, instance_id=local.spec.id,
                                         fault_id=local.open_fault, at_mono=at))
        local.open_fault = None
