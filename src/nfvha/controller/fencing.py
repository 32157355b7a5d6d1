"""Fence drivers: make sure a host that stopped answering is off before anything of it is
started elsewhere (HOST-4). A driver either confirms the host off or raises FenceError;
there is no "probably off".

- `none`: no fence device. Nothing is ever evacuated automatically; a failed host raises
  the `host.fence_failed` alarm for an operator.
- `ipmi`: the host's BMC through `ipmitool` (power off, then poll until it reports off).
- `netns`: the test hosts, network namespaces on one machine: every process in the
  namespace is killed, which is what a power cut does to them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Protocol

FENCE_TIMEOUT = 20.0  # seconds for the host to be confirmed off


class FenceError(Exception):
    pass


class FenceDriver(Protocol):
    name: str

    async def power_off(self, host: str) -> None:
        """Return once the host is confirmed off; raise FenceError otherwise."""


class NoFence:
    name = "none"

    async def power_off(self, host: str) -> None:
        raise FenceError(f"no fence driver is configured, so {host} cannot be confirmed off: "
                         "its instances stay where they are until an operator acts")


def netns_pids(netns: str) -> list[int]:
    """The processes whose network namespace is /run/netns/NETNS."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except OSError:
        raise FenceError(f"no network namespace {netns}") from None
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                st = os.stat(f"/proc/{entry.name}/ns/net")
            except OSError:
                continue  # gone meanwhile
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(entry.name))
    return pids


class NetnsFence:
    """Test hosts: host H is the network namespace PREFIX+H."""

    name = "netns"

    def __init__(self, prefix: str = "nfvha-") -> None:
        self.prefix = prefix

    async def power_off(self, host: str) -> None:
        netns = self.prefix + host
        async with asyncio.timeout(FENCE_TIMEOUT):
            while pids := await asyncio.to_thread(netns_pids, netns):
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                await asyncio.sleep(0.01)


class IpmiFence:
    """Real hosts: a JSON file maps each host to its BMC,
    `{"HOST": {"address": "10.0.0.5", "user": "admin", "password_file": "/etc/nfvha/bmc-HOST"}}`."""

    name = "ipmi"

    def __init__(self, config: Path, ipmitool: str = "ipmitool") -> None:
        try:
            self.bmcs: dict[str, dict] = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"fence config {config}: {exc}") from None
        for host, bmc in self.bmcs.items():
            missing = {"address", "user", "password_file"} - set(bmc)
            if missing:
                raise ValueError(f"fence config {config}: host {host} lacks {', '.join(sorted(missing))}")
        self.ipmitool = ipmitool

    def argv(self, host: str, *command: str) -> list[str]:
        bmc = self.bmcs.get(host)
        if bmc is None:
            raise FenceError(f"the fence config has no BMC for host {host}")
        return [self.ipmitool, "-I", "lanplus", "-H", bmc["address"], "-U", bmc["user"],
                "-f", bmc["password_file"], *command]

    async def _run(self, host: str, *command: str) -> str:
        argv = self.argv(host, *command)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise FenceError(f"cannot run {argv[0]}: {exc.strerror}") from None
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise FenceError(f"ipmitool {' '.join(command)} for {host} failed ({proc.returncode}): {text[:200]}")
        return text

    async def power_off(self, host: str) -> None:
        async with asyncio.timeout(FENCE_TIMEOUT):
            await self._run(host, "chassis", "power", "off")
            while not powered_off(await self._run(host, "chassis", "power", "status")):  # noqa: ASYNC110
                await asyncio.sleep(0.5)  # polling the BMC is the only way to know


def powered_off(status: str) -> bool:
    """ipmitool's `chassis power status` says "Chassis Power is off"."""
    return status.strip().lower().endswith("is off")


def make_fence(driver: str, config: Path | None = None, netns_prefix: str = "nfvha-") -> FenceDriver:
    if driver == "none":
        return NoFence()
    if driver == "netns":
        return NetnsFence(netns_prefix)
    if driver == "ipmi":
        if config is None:
            raise ValueError("--fence ipmi needs --fence-config, the hosts' BMCs")
        return IpmiFence(config)
    raise ValueError(f"--fence must be none, netns or ipmi, not {driver!r}")
