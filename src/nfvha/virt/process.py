"""The `process` driver (embedded default): an instance is a local process group.

The instance plays QEMU's part for its channel: it serves a unix socket at the path the
driver gives it (`{channel}` in its command, `NFVHA_CHANNEL` in its environment) and the
agent connects. Exits are seen through a pidfd on the event loop, so a crash becomes a
lifecycle event within a millisecond or so, with no watcher threads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_UNIX_PATH = 107
PF_EXITING = 0x4  # include/linux/sched.h

ExitCallback = Callable[[str, int, float], None]  # (instance id, exit code, monotonic time)


class DriverError(Exception):
    pass


@dataclass
class _Proc:
    popen: subprocess.Popen
    pidfd: int
    exited: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ProcessDriver:
    name = "process"

    def __init__(self, state_dir: Path, on_exit: ExitCallback) -> None:
        self.state_dir = state_dir
        self.on_exit = on_exit
        self._procs: dict[str, _Proc] = {}
        (state_dir / "ch").mkdir(parents=True, exist_ok=True)
        (state_dir / "log").mkdir(parents=True, exist_ok=True)

    def channel_path(self, instance_id: str) -> str:
        path = str(self.state_dir.resolve() / "ch" / f"{instance_id}.sock")
        if len(path.encode()) > MAX_UNIX_PATH:
            raise DriverError(f"channel path {path} is longer than {MAX_UNIX_PATH} bytes: use a shorter --state-dir")
        return path

    def running(self, instance_id: str) -> bool:
        return instance_id in self._procs

    def pid(self, instance_id: str) -> int | None:
        proc = self._procs.get(instance_id)
        return proc.popen.pid if proc else None

    async def start(self, instance_id: str, command: list[str]) -> int:
        if instance_id in self._procs:
            return self._procs[instance_id].popen.pid
        path = self.channel_path(instance_id)
        if os.path.exists(path):
            os.unlink(path)
        argv = [arg.replace("{channel}", path) for arg in command]
        env = {**os.environ, "NFVHA_CHANNEL": path, "NFVHA_INSTANCE_ID": instance_id}
        with open(self.state_dir / "log" / f"{instance_id}.log", "ab") as log:
            try:
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         start_new_session=True)
            except OSError as exc:
                raise DriverError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        pidfd = os.pidfd_open(popen.pid)
        proc = _Proc(popen, pidfd)
        self._procs[instance_id] = proc
        asyncio.get_running_loop().add_reader(pidfd, self._reap, instance_id, proc)
        return popen.pid

    def _reap(self, instance_id: str, proc: _Proc) -> None:
        at = time.monotonic()
        pid = proc.popen.pid
        # the leader's zombie still holds the group id: clear the rest of the group first
        self._killpg(pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            status = 0
        loop = asyncio.get_running_loop()
        loop.remove_reader(proc.pidfd)
        os.close(proc.pidfd)
        code = os.waitstatus_to_exitcode(status)
        proc.popen.returncode = code
        if self._procs.get(instance_id) is proc:
            del self._procs[instance_id]
        proc.exited.set_result(code)
        self.on_exit(instance_id, code, at)

    def exiting(self, instance_id: str) -> bool:
        """Whether the instance's process is on its way out (the kernel's PF_EXITING).

        It closes its files before its exit can be waited for, and under load the gap
        between the two can be long: a closed channel is not yet a live instance's.
        """
        proc = self._procs.get(instance_id)
        if proc is None:
            return True
        try:
            stat = Path(f"/proc/{proc.popen.pid}/stat").read_text()
        except OSError:
            return True
        flags = int(stat.rsplit(")", 1)[1].split()[6])
        return bool(flags & PF_EXITING)

    def signal(self, instance_id: str, sig: int) -> None:
        proc = self._procs.get(instance_id)
        if proc is None:
            raise DriverError(f"instance {instance_id} is not running")
        self._killpg(proc.popen.pid, sig)

    async def stop(self, instance_id: str, grace: float = 5.0) -> int | None:
        """SIGTERM (the guest leaves gracefully), SIGKILL after `grace` seconds."""
        proc = self._procs.get(instance_id)
        if proc is None:
            return None
        self._killpg(proc.popen.pid, signal.SIGTERM)
        self._killpg(proc.popen.pid, signal.SIGCONT)  # a frozen group cannot act on SIGTERM
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(proc.exited)
        except TimeoutError:
            self._killpg(proc.popen.pid, signal.SIGKILL)
            return await proc.exited

    async def kill(self, instance_id: str) -> int | None:
        proc = self._procs.get(instance_id)
        if proc is None:
            return None
        self._killpg(proc.popen.pid, signal.SIGKILL)
        return await proc.exited

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(i, grace=2.0) for i in list(self._procs)))

    @staticmethod
    def _killpg(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
