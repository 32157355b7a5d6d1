"""Faults of real VMs: hangs (the VM paused) and crashes (QEMU killed), through the qemu or
libvirt driver, with the reference guest image under QEMU/TCG.

    .venv/bin/python bench/vm_faults.py [--driver qemu|libvirt] [--faults 20] [--interval-ms 100]

Runs `nfvha up --driver D` with a webhook receiver subscribed, boots `--instances` VMs,
injects `--faults` hangs, then `--faults` crashes, in rotation through the API; each is
recovered (the VM restarted and its guest heartbeating) before its VM takes the next.
Prints a final JSON line, per kind:
- detection: injection → fault detected by the agent (hang target: interval × threshold + 100 ms);
- recorded: injection → fault stored by the controller;
- notification: detected → webhook delivered;
- recovery: detected → the restarted guest answers its first challenge (SAL1: 5-6 s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from nfvha.hatest.harness import Receiver, Server
from nfvha.hatest.measure import EventWatcher, inject_in_rotation, summary
from nfvha.hatest.vm import destroy_domains, ensure_libvirtd, reference_vm

BOOT = 120.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--driver", choices=("qemu", "libvirt"), default="qemu")
    p.add_argument("--faults", type=int, default=20, help="of each kind")
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--miss-threshold", type=int, default=2)
    p.add_argument("--kinds", default="hang,crash", help="which faults, in order")
    p.add_argument("--keep-state", action="store_true", help="keep the state dir (logs) for a post-mortem")
    args = p.parse_args()
    if args.driver == "libvirt":
        ensure_libvirtd()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state), "--driver", args.driver,
                  "--allow-host-root", "--miss-threshold", str(args.miss_threshold)], state)
    receiver = Receiver("bench-secret")
    result: dict = {"bench": "vm_faults", "driver": args.driver, "accel": "tcg", "interval_ms": args.interval_ms,
                    "miss_threshold": args.miss_threshold, "instances": args.instances,
                    "hang_target_p99_ms": args.interval_ms * args.miss_threshold + 100}
    try:
        srv.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "bench-secret"}).raise_for_status()
        events = EventWatcher(srv.url)
        vm = reference_vm(state / "image", args.interval_ms)
        ids = [srv.create(f"vm-{k}", vm=vm)["id"] for k in range(args.instances)]
        for iid in ids:
            srv.wait_heartbeating(iid, BOOT)
        for kind in args.kinds.split(","):
            fault_ids = inject_in_rotation(srv, events, ids, kind, args.faults, timeout=BOOT)
            faults = {f["id"]: f for f in srv.faults()}
            mine = [faults[i] for i in fault_ids]
            missing = [f["id"] for f in mine if f["notification_ms"] is None]
            assert not missing, f"not notified: {missing}"
            result[kind] = {
                "reasons": sorted({f["reason"] for f in mine}),
                "detection": summary([f["detection_ms"] for f in mine]),
                "recorded": summary([f["detection_ms"] + f["report_ms"] for f in mine]),
                "notification": summary([f["notification_ms"] for f in mine]),
                "recovery": summary([f["recovery_ms"] for f in mine]),
            }
        assert all(r["signature_ok"] for r in receiver.received)
        print(json.dumps(result))
    finally:
        srv.stop()
        receiver.httpd.shutdown()
        if args.driver == "libvirt":
            destroy_domains()
        if not args.keep_state:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
