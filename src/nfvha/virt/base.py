"""What every virt driver offers the agent: start, stop, kill, inject, and exits as events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..control import InstanceSpec

MAX_UNIX_PATH = 107
PF_EXITING = 0x4  # include/linux/sched.h


class DriverError(Exception):
    pass


@dataclass(frozen=True)
class Exit:
    at: float  # monotonic
    clean: bool  # ended on its own accord: status 0, a guest power-off
    detail: str


ExitCallback = Callable[[str, Exit], None]


class Driver(Protocol):
    name: str

    def channel_path(self, instance_id: str) -> str | None:
        """The host side of the instance's channel, once it is known."""

    def discover(self) -> dict[str, bool]:
        """Instances the hypervisor already runs, marked for nfvha: name → heartbeat flag."""

    def running(self, instance_id: str) -> bool: ...
    def pid(self, instance_id: str) -> int | None: ...
    async def start(self, instance_id: str, spec: InstanceSpec) -> None: ...
    async def stop(self, instance_id: str, grace: float = 5.0) -> None: ...
    async def kill(self, instance_id: str) -> None: ...
    async def remove(self, instance_id: str) -> None:
        """The instance leaves nfvha: stop what nfvha started, leave an operator's own VM running."""
    async def inject(self, instance_id: str, kind: str) -> None: ...
    def exiting(self, instance_id: str) -> bool:
        """Whether the instance is on its way out: a channel closing then is its exit's doing."""
    async def close(self) -> None: ...


def socket_path(state_dir: Path, kind: str, instance_id: str) -> str:
    path = str(state_dir.resolve() / kind / f"{instance_id}.sock")
    if len(path.encode()) > MAX_UNIX_PATH:
        raise DriverError(f"socket path {path} is longer than {MAX_UNIX_PATH} bytes: use a shorter --state-dir")
    return path


def pid_exiting(pid: int | None) -> bool:
    """A process that is gone, or has the kernel's PF_EXITING set.

    It closes its files before its exit can be waited for, and under load the gap between
    the two can be long: a closed channel is not yet a live instance's.
    """
    if pid is None:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    flags = int(stat.rsplit(")", 1)[1].split()[6])
    return bool(flags & PF_EXITING)
