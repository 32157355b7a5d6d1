"""Scale: one real agent heartbeating 500 instances at a 1 s interval.

    .venv/bin/python bench/scale.py [--instances 500] [--interval-ms 1000] [--seconds 120]

Runs `nfvha controller` and `nfvha agent` as separate processes. Each instance is a real
process of the process driver (`sleep`), whose channel is served by simulated guests, many
per process (bench/sim_guests.py); the agent under test is the real one. Prints the
agent's CPU (share of one core over the measured window), its memory per instance
(RSS growth / instances) and the number of faults (all false: nothing failed).
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

import httpx

from nfvha.hatest.harness import Server, wait_until


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=500)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--guests-per-process", type=int, default=250)
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    ctl = Server(["controller", "--api", "127.0.0.1:0", "--state-dir", str(state / "ctl")], state)
    agent = Server(["agent", "--controller", ctl.url, "--host", "scale", "--state-dir", str(state / "agent")],
                   state, url_pattern=None)
    sims: list[subprocess.Popen] = []
    try:
        wait_until(lambda: ctl.api.get("/v1/hosts").json(), what="the agent")
        time.sleep(1.0)
        rss_before = rss_kib(agent.proc.pid)
        with httpx.Client(base_url=ctl.url, timeout=60) as api:
            ids = [api.post("/v1/instances", json={"name": f"s{k}", "command": ["sleep", "100000"]}).json()["id"]
                   for k in range(args.instances)]
        paths = [str(state / "agent" / "ch" / f"{i}.sock") for i in ids]
        sim = Path(__file__).with_name("sim_guests.py")
        for k in range(0, len(paths), args.guests_per_process):
            sims.append(subprocess.Popen([sys.executable, str(sim), str(args.interval_ms),
                                          *paths[k:k + args.guests_per_process]], stdout=subprocess.DEVNULL))

        def heartbeating() -> bool:
            insts = ctl.api.get("/v1/instances").json()
            return sum(i["heartbeat_status"] == "heartbeating" for i in insts) == args.instances

        t0 = time.monotonic()
        wait_until(heartbeating, timeout=120, what="all instances heartbeating")
        all_up_s = time.monotonic() - t0
        time.sleep(2 * args.interval_ms / 1000)  # let the start-up settle before measuring
        cpu0, w0 = cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu1, w1 = cpu_seconds(agent.proc.pid), time.monotonic()
        rss_after = rss_kib(agent.proc.pid)
        faults = ctl.faults()
        still = sum(i["heartbeat_status"] == "heartbeating" for i in ctl.api.get("/v1/instances").json())
        print(json.dumps({
            "bench": "scale", "instances": args.instances, "interval_ms": args.interval_ms,
            "seconds": round(w1 - w0, 1), "all_heartbeating_after_s": round(all_up_s, 1),
            "agent_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
            "agent_rss_mib": round(rss_after / 1024, 1),
            "agent_kib_per_instance": round((rss_after - rss_before) / args.instances, 1),
            "false_faults": len(faults), "heartbeating_at_end": still,
        }))
    finally:
        for s in sims:
            s.terminate()
        agent.stop()
        ctl.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
