"""The `process` driver (embedded default): an instance is a local process group.

The instance plays QEMU's part for its channel: it serves a unix socket at the path the
driver gives it (`{channel}` in its command, `NFVHA_CHANNEL` in its environment) and the
agent connects. Exits are seen through a pidfd on the event loop, so a crash becomes a
lifecycle event within a millisecond or so, with no watcher threads.

Instances outlive an agent that dies (they run in sessions of their own): a pid file per
instance lets the next agent adopt the survivor instead of starting a second copy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..control import InstanceSpec
from .base import DriverError, Exit, ExitCallback, pid_exiting, socket_path

INJECT_SIGNALS = {"hang": signal.SIGSTOP, "crash": signal.SIGKILL, "unhealthy": signal.SIGUSR1}


@dataclass
class _Proc:
    pid: int
    pidfd: int
    popen: subprocess.Popen | None  # None: adopted from an earlier agent, not our child
    exited: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ProcessDriver:
    name = "process"

    def __init__(self, state_dir: Path, on_exit: ExitCallback) -> None:
        self.state_dir = state_dir
        self.on_exit = on_exit
        self._procs: dict[str, _Proc] = {}
        (state_dir / "ch").mkdir(parents=True, exist_ok=True)
        (state_dir / "log").mkdir(parents=True, exist_ok=True)
        (state_dir / "run").mkdir(parents=True, exist_ok=True)

    def channel_path(self, instance_id: str) -> str:
        return socket_path(self.state_dir, "ch", instance_id)

    def discover(self) -> dict[str, bool]:
        return {}  # nothing runs here but what the agent started

    def running(self, instance_id: str) -> bool:
        return instance_id in self._procs

    def pid(self, instance_id: str) -> int | None:
        proc = self._procs.get(instance_id)
        return proc.pid if proc else None

    async def start(self, instance_id: str, spec: InstanceSpec) -> None:
        if not spec.command:
            raise DriverError("the process driver runs a command: this instance has none")
        self.spawn(instance_id, [arg.replace("{channel}", self.channel_path(instance_id)) for arg in spec.command])

    def _pidfile(self, instance_id: str) -> Path:
        return self.state_dir / "run" / f"{instance_id}.pid"

    def spawn(self, instance_id: str, argv: list[str]) -> None:
        if instance_id in self._procs or self._adopt(instance_id):
            return
        path = self.channel_path(instance_id)
        if os.path.exists(path):
            os.unlink(path)
        env = {**os.environ, "NFVHA_CHANNEL": path, "NFVHA_INSTANCE_ID": instance_id}
        with open(self.state_dir / "log" / f"{instance_id}.log", "ab") as log:
            try:
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         start_new_session=True)
            except OSError as exc:
                raise DriverError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        self._watch(instance_id, popen.pid, popen)
        self._pidfile(instance_id).write_text(f"{popen.pid} {start_time(popen.pid)}\n")

    def _watch(self, instance_id: str, pid: int, popen: subprocess.Popen | None) -> None:
        proc = _Proc(pid, os.pidfd_open(pid), popen)
        self._procs[instance_id] = proc
        asyncio.get_running_loop().add_reader(proc.pidfd, self._reap, instance_id, proc)

    def _adopt(self, instance_id: str) -> bool:
        """Take over the instance's process if an earlier agent left it running."""
        try:
            pid_s, started = self._pidfile(instance_id).read_text().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            return False
        # the pid alone may have been reused since: its start time names the process
        if start_time(pid) != started or pid_exiting(pid):
            return False
        try:
            self._watch(instance_id, pid, None)
        except ProcessLookupError:
            return False
        return True

    def _reap(self, instance_id: str, proc: _Proc) -> None:
        at = time.monotonic()
        # the leader's zombie still holds the group id: clear the rest of the group first
        self._killpg(proc.pid, signal.SIGKILL)
        code: int | None = None
        if proc.popen is not None:
            try:
                _, status = os.waitpid(proc.pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = 0
            proc.popen.returncode = code
        loop = asyncio.get_running_loop()
        loop.remove_reader(proc.pidfd)
        os.close(proc.pidfd)
        if self._procs.get(instance_id) is proc:
            del self._procs[instance_id]
            self._pidfile(instance_id).unlink(missing_ok=True)
        proc.exited.set_result(code)
        self.on_exit(instance_id, Exit(at, code == 0, self.describe(code)))

    def describe(self, code: int | None) -> str:
        if code is None:
            return "instance process ended (adopted from an earlier agent: its status is unknown)"
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"instance process {how}"

    def exiting(self, instance_id: str) -> bool:
        return pid_exiting(self.pid(instance_id))

    async def inject(self, instance_id: str, kind: str) -> None:
        self.signal(instance_id, INJECT_SIGNALS[kind])

    def signal(self, instance_id: str, sig: int) -> None:
        proc = self._procs.get(instance_id)
        if proc is None:
            raise DriverError(f"instance {instance_id} is not running")
        self._killpg(proc.pid, sig)

    async def stop(self, instance_id: str, grace: float = 5.0) -> None:
        """SIGTERM (the guest leaves gracefully), SIGKILL after `grace` seconds."""
        proc = self._procs.get(instance_id)
        if proc is not None:
            self._killpg(proc.pid, signal.SIGTERM)
            self._killpg(proc.pid, signal.SIGCONT)  # a frozen group cannot act on SIGTERM
            await self.wait_exit(instance_id, grace)

    async def wait_exit(self, instance_id: str, grace: float) -> None:
        """Wait up to `grace` seconds for the instance to end, then kill it."""
        proc = self._procs.get(instance_id)
        if proc is None:
            return
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(proc.exited)
        except TimeoutError:
            await self.kill(instance_id)

    async def kill(self, instance_id: str) -> None:
        proc = self._procs.get(instance_id)
        if proc is not None:
            self._killpg(proc.pid, signal.SIGKILL)
            await proc.exited

    async def remove(self, instance_id: str) -> None:
        await self.stop(instance_id)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(i, grace=2.0) for i in list(self._procs)))

    @staticmethod
    def _killpg(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
