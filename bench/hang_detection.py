"""Hang detection: SIGSTOP a heartbeating guest, measure injection → fault detected.

    .venv/bin/python bench/hang_detection.py [--hangs 200] [--interval-ms 100] [--miss-threshold 2]

Runs `nfvha up` on embedded defaults with real guest daemons (process driver), injects
hangs through the API into a few instances in rotation (each is restarted by recovery
before its next hang), and prints the detection times, then the recovery times, as a
final JSON line. The protocol's bound is interval × (threshold + 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from nfvha.hatest.harness import Server, guest_command
from nfvha.hatest.measure import EventWatcher, inject_in_rotation, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hangs", type=int, default=200)
    p.add_argument("--instances", type=int, default=4, help="heartbeating instances; faults rotate over them")
    p.add_argument("--concurrency", type=int, default=1, help="faults in flight at once")
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--miss-threshold", type=int, default=2)
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state),
                  "--miss-threshold", str(args.miss_threshold)], state)
    try:
        events = EventWatcher(srv.url)
        ids = [srv.create(f"hang-{k}", guest_command(f"hang-{k}", args.interval_ms))["id"]
               for k in range(args.instances)]
        for iid in ids:
            srv.wait_heartbeating(iid)
        fault_ids = inject_in_rotation(srv, events, ids, "hang", args.hangs, args.concurrency)
        faults = {f["id"]: f for f in srv.faults()}
        mine = [faults[i] for i in fault_ids]
        assert all(f["reason"] == "heartbeat_timeout" and f["fault_basis"] == "injected" for f in mine)
        result = {
            "bench": "hang_detection", "interval_ms": args.interval_ms, "instances": args.instances,
            "concurrency": args.concurrency, "miss_threshold": args.miss_threshold,
            "bound_ms": args.interval_ms * (args.miss_threshold + 1),
            "detection": summary([f["detection_ms"] for f in mine]),
            "recovery": summary([f["recovery_ms"] for f in mine]),
            "sal1_detection_met": sum(f["sla"]["detection"] == "met" for f in mine),
        }
        print(json.dumps(result))
    finally:
        srv.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
