"""False host failures under CPU stress: every core busy for 2 minutes must cause no host
to be declared down or its agent down, and no instance fault.

    sudo .venv/bin/python bench/host_stress.py [--seconds 120] [--hosts 3] [--instances 5]

Hosts are network namespaces (nfvha.hatest.netns) with their agents (host heartbeat every
100 ms, suspect after 400 ms of silence) and heartbeating guests (100 ms); one busy-loop
process per core runs beside them at the same priority. Prints as a final JSON line the
host failures, agent_down events and instance faults seen (all must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nfvha.hatest.harness import Receiver, guest_command
from nfvha.hatest.netns import Lab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--instances", type=int, default=5, help="heartbeating guests per host")
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    hosts = [f"h{k + 1}" for k in range(args.hosts)]
    burners: list[subprocess.Popen] = []
    try:
        with Lab(state) as lab:
            lab.add_hosts(*hosts)
            assert lab.ctl is not None
            receiver = Receiver("bench-secret")
            lab.api.post("/v1/subscriptions", json={"url": receiver.url, "secret": "bench-secret"}).raise_for_status()
            for h in hosts:
                for k in range(args.instances):
                    lab.ctl.wait_heartbeating(lab.ctl.create(f"{h}-{k}", guest_command(f"{h}-{k}"), host=h)["id"])
            cores = os.cpu_count() or 1
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
            print(f"{cores} busy loops for {args.seconds:.0f} s beside {len(hosts)} hosts and "
                  f"{len(hosts) * args.instances} guests", flush=True)
            time.sleep(args.seconds)
            for b in burners:
                b.kill()
            time.sleep(1.0)
            failures = lab.api.get("/v1/host-failures").json()
            faults = lab.ctl.faults()
            types = [r["event"]["type"] for r in receiver.received]
    finally:
        for b in burners:
            b.kill()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps({"bench": "host_stress", "seconds": args.seconds, "cores_busy": len(burners),
                      "hosts": len(hosts), "guests": len(hosts) * args.instances, "host_failures": len(failures),
                      "agent_down": types.count("nfvha.host.agent_down"), "host_down": types.count("nfvha.host.down"),
                      "instance_faults": len(faults)}))


if __name__ == "__main__":
    main()
