"""Boot to first heartbeat: how long the reference guest image takes from QEMU's start to
the guest daemon's first `init` on the channel, and to its first answered challenge.

    .venv/bin/python bench/vm_boot.py [--boots 10] [--interval-ms 100] [--driver qemu|libvirt]

Builds the reference image (nfvha.virt.image) into a temporary directory, then boots it
`--boots` times through the chosen driver (libvirt: libvirtd must be running), with the
agent's own channel code on the host side. Times are the host's monotonic clock (the
guest's is unreliable under TCG). Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from nfvha.agent.session import ChannelSession
from nfvha.control import InstanceSpec, VmSpec
from nfvha.hatest.measure import summary
from nfvha.virt import image
from nfvha.wire import heartbeat as hb


async def boot_once(driver, spec: InstanceSpec) -> tuple[float, float]:
    seen: dict[type, float] = {}
    done = asyncio.Event()

    def sink(iid: str, ev: object, now: float) -> None:
        seen.setdefault(type(ev), now)
        if isinstance(ev, hb.Healthy):
            done.set()

    session = ChannelSession(spec.id, driver.channel_path, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(session.run())
        t0 = time.monotonic()
        await driver.start(spec.id, spec)
        session.kick()
        async with asyncio.timeout(60):
            await done.wait()
        task.cancel()
    await driver.kill(spec.id)
    await asyncio.sleep(2.5)  # let libvirt finish its clean-up: measure a boot, not that
    return (seen[hb.Registered] - t0) * 1000, (seen[hb.Healthy] - t0) * 1000


async def run(args: argparse.Namespace, state: Path) -> dict:
    spec_vm = VmSpec(**image.build(state / "image", args.interval_ms))
    if args.driver == "libvirt":
        from nfvha.virt.libvirt import LibvirtDriver
        driver = LibvirtDriver(state, lambda iid, ex: None)
    else:
        from nfvha.virt.qemu import QemuDriver
        driver = QemuDriver(state, lambda iid, ex: None)
    first_init, first_ok = [], []
    for k in range(args.boots):
        a, b = await boot_once(driver, InstanceSpec(id=f"boot{k}", name=f"boot{k}", vm=spec_vm))
        first_init.append(a)
        first_ok.append(b)
    await driver.close()
    return {"bench": "vm_boot", "driver": args.driver, "accel": "tcg", "interval_ms": args.interval_ms,
            "start_to_first_init": summary(first_init), "start_to_first_heartbeat": summary(first_ok)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boots", type=int, default=10)
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--driver", choices=("qemu", "libvirt"), default="qemu")
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="nfvha-boot-", dir="/tmp"))
    try:
        print(json.dumps(asyncio.run(run(args, state))))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
