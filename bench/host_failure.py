"""Host failure: a compute host with 20 instances dies; measure detection, fencing and
recovery (every instance running and heartbeating on another host).

    sudo .venv/bin/python bench/host_failure.py [--rounds 20] [--instances 20] [--fault kill|cut|freeze]

Hosts are network namespaces (nfvha.hatest.netns), each with its own agent and hostmon; the
controller fences with the netns driver. Each round puts the instances on one host (round
robin over 4), then:
- kill: the host's links drop and every process in it is SIGKILLed (a power cut);
- cut: the host loses both its networks while everything in it keeps running;
- freeze: every process in it is SIGSTOPped (a hung host).
A sampler counts each instance's live processes across all hosts every few ms throughout.
Prints as a final JSON line:
- detected: fault → host declared down;
- fenced: fault → fence confirmed;
- recovered: fault → all instances heartbeating elsewhere;
- max_copies: the most live copies of any instance ever seen at once (must be 1);
- fenced_first: rounds where every evacuation started after the fence was confirmed;
- false_host_failures: hosts found down that were not the victim (must be 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from nfvha.hatest.harness import guest_command, wait_until
from nfvha.hatest.measure import summary
from nfvha.hatest.netns import CopyWatch, Lab

HOSTS = ["h1", "h2", "h3", "h4"]


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--fault", choices=("kill", "cut", "freeze"), default="kill")
    p.add_argument("--interval-ms", type=int, default=100, help="the guests' heartbeat interval")
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    detected, fenced, recovered, fenced_first = [], [], [], 0
    try:
        with Lab(state) as lab, CopyWatch() as watch:
            lab.add_hosts(*HOSTS)
            for r in range(args.rounds):
                victim = HOSTS[r % len(HOSTS)]
                for inst in lab.api.get("/v1/instances").json():
                    lab.api.delete(f"/v1/instances/{inst['id']}").raise_for_status()
                ids = [lab.ctl.create(f"r{r}-{k}", guest_command(f"r{r}-{k}", args.interval_ms),  # type: ignore[union-attr]
                                      host=victim)["id"] for k in range(args.instances)]
                for iid in ids:
                    lab.ctl.wait_heartbeating(iid)  # type: ignore[union-attr]
                seen = {f["id"] for f in lab.api.get("/v1/host-failures").json()}
                at = {"kill": lab.kill, "cut": lab.cut, "freeze": lab.freeze}[args.fault](victim)
                f = wait_until(lambda seen=seen: next((f for f in lab.api.get("/v1/host-failures").json()
                                                       if f["id"] not in seen and f["state"] == "recovered"), None),
                               30, "recovery")
                assert isinstance(f, dict)
                detected.append((ts(f["detected_at"]) - at) * 1000)
                fenced.append((ts(f["fenced_at"]) - at) * 1000)
                recovered.append((ts(f["recovered_at"]) - at) * 1000)
                fenced_first += all(e["started_at"] >= f["fenced_at"] for e in f["evacuations"])
                print(f"round {r}: {victim} {args.fault}: detected {detected[-1]:.0f} ms, fenced {fenced[-1]:.0f} ms, "
                      f"{len(f['evacuations'])} instances recovered {recovered[-1]:.0f} ms", flush=True)
                lab.restore(victim)
                lab.wait_connected(victim)
            false_failures = len(lab.api.get("/v1/host-failures", params={"limit": 10_000}).json()) - args.rounds
            max_copies = max(watch.max.values())
            samples = watch.samples
    except BaseException:
        print(f"kept {state} for a post-mortem", file=sys.stderr)
        raise
    shutil.rmtree(state, ignore_errors=True)
    print(json.dumps({"bench": "host_failure", "fault": args.fault, "rounds": args.rounds,
                      "instances": args.instances, "detected": summary(detected), "fenced": summary(fenced),
                      "recovered": summary(recovered), "max_copies": max_copies, "copy_samples": samples,
                      "fenced_first": f"{fenced_first}/{args.rounds}", "false_host_failures": false_failures}))


if __name__ == "__main__":
    main()
