"""The `qemu` driver: an instance is a QEMU process launched by the agent (no libvirt).

QEMU serves the instance's virtio-serial port `nfvha.guest.0` on a unix socket, the same
place the process driver's instances serve theirs, so the agent's channel code is one.
QEMU is a process like any other for exits (a pidfd); the VM itself is driven over QMP:
`stop` freezes it, `system_powerdown` presses its ACPI power button. `-no-reboot` turns a
guest reset — the reboot after a kernel panic included — into QEMU's exit, so a panicked
guest is an exit seen within milliseconds instead of a silence.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from qemu.qmp import QMPClient, QMPError

from ..control import InstanceSpec, VmSpec
from .base import DriverError, ExitCallback, socket_path
from .domxml import PORT_NAME
from .process import ProcessDriver

QMP_TIMEOUT = 5.0


def qemu_argv(vm: VmSpec, channel: str, console: str, qmp: str, serial: str, accel: str = "tcg",
              binary: str = "qemu-system-x86_64", console_log: str | None = None) -> list[str]:
    if vm.domain:
        raise DriverError("`vm.domain` names a libvirt domain: the qemu driver needs kernel or disk")
    if not (vm.kernel or vm.disk):
        raise DriverError("vm: give a kernel or a disk to boot")
    argv = [binary, "-name", serial, "-accel", accel, "-m", str(vm.memory_mb), "-smp", str(vm.vcpus),
            "-display", "none", "-no-reboot", "-nic", "none", "-monitor", "none", "-nodefaults",
            "-smbios", f"type=1,serial={serial}",
            "-chardev", f"socket,id=con0,path={console},server=on,wait=off"
            + (f",logfile={console_log}" if console_log else ""), "-serial", "chardev:con0",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-device", "virtio-serial",
            "-chardev", f"socket,id=ch0,path={channel},server=on,wait=off",
            "-device", f"virtserialport,chardev=ch0,name={PORT_NAME}",
            "-device", "virtio-rng-pci"]  # without entropy, Python's start in the guest stalls
    if vm.kernel:
        argv += ["-kernel", vm.kernel, "-append", vm.cmdline]
        if vm.initrd:
            argv += ["-initrd", vm.initrd]
    if vm.disk:
        argv += ["-drive", f"file={vm.disk},if=virtio,snapshot=on"]
    if vm.share_host_root:
        argv += ["-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap",
                 "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=hostroot"]
    return argv


class QemuDriver(ProcessDriver):
    name = "qemu"

    def __init__(self, state_dir: Path, on_exit: ExitCallback, accel: str = "tcg") -> None:
        super().__init__(state_dir, on_exit)
        self.accel = accel
        self.binary = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        for d in ("con", "qmp"):
            (state_dir / d).mkdir(parents=True, exist_ok=True)
        self._qmp_locks: dict[str, asyncio.Lock] = {}

    def console_path(self, instance_id: str) -> str:
        return socket_path(self.state_dir, "con", instance_id)

    async def start(self, instance_id: str, spec: InstanceSpec) -> None:
        if spec.vm is None:
            raise DriverError("the qemu driver runs VMs: this instance has no `vm`")
        for path in (spec.vm.kernel, spec.vm.initrd, spec.vm.disk):
            if path and not os.path.isfile(path):
                raise DriverError(f"vm: no such file on host: {path}")
        if self._adopt(instance_id):  # a QEMU its previous agent left running: its sockets are live
            return
        qmp = socket_path(self.state_dir, "qmp", instance_id)
        console = self.console_path(instance_id)
        for path in (qmp, console):
            if os.path.exists(path):
                os.unlink(path)
        self.spawn(instance_id, qemu_argv(spec.vm, self.channel_path(instance_id), console, qmp, instance_id,
                                          self.accel, self.binary, self.console_log(instance_id)))

    def console_log(self, instance_id: str) -> str:
        """What the guest wrote to its serial console, kept for a post-mortem."""
        return str(self.state_dir.resolve() / "log" / f"{instance_id}.console.log")

    def describe(self, code: int | None) -> str:
        if code is None:
            return "QEMU ended (adopted from an earlier agent: its status is unknown)"
        if code == 0:
            return "QEMU exited: the guest powered off or reset"
        return f"QEMU killed by signal {-code}" if code < 0 else f"QEMU exited with status {code}"

    async def qmp(self, instance_id: str, command: str) -> object:
        if not self.running(instance_id):
            raise DriverError(f"instance {instance_id} is not running")
        lock = self._qmp_locks.setdefault(instance_id, asyncio.Lock())
        client = QMPClient(instance_id)
        async with lock:  # QEMU's monitor socket takes one client at a time
            try:
                async with asyncio.timeout(QMP_TIMEOUT):
                    await client.connect(socket_path(self.state_dir, "qmp", instance_id))
                    try:
                        return await client.execute(command)
                    finally:
                        await client.disconnect()
            except (OSError, QMPError, TimeoutError) as exc:
                raise DriverError(f"QMP {command} on instance {instance_id}: {exc or type(exc).__name__}") from None

    async def stop(self, instance_id: str, grace: float = 5.0) -> None:
        """Press the power button (after thawing a paused VM); kill QEMU after `grace` seconds."""
        if not self.running(instance_id):
            return
        try:
            await self.qmp(instance_id, "cont")
            await self.qmp(instance_id, "system_powerdown")
        except DriverError:
            await self.kill(instance_id)
            return
        await self.wait_exit(instance_id, grace)

    async def inject(self, instance_id: str, kind: str) -> None:
        if kind == "crash":
            self.signal(instance_id, signal.SIGKILL)
        elif kind == "hang":  # the whole VM freezes
            await self.qmp(instance_id, "stop")
        else:
            raise DriverError(f"the {self.name} driver cannot inject {kind!r}: the guest's application is "
                              "out of its reach (use the guest's console)")
