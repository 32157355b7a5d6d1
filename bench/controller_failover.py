"""Controller failover: three controllers on a 3-member etcd cluster and PostgreSQL; the
leader is stopped (SIGKILL, SIGTERM) or cut off from etcd, again and again.

    .venv/bin/python bench/controller_failover.py [--rounds 20] [--mode kill|graceful|partition]

Prints as a final JSON line, per round:
- kill, graceful: the leader stopped → another controller acting as the leader (its own
  `acting_since`, the moment its leader's parts started);
- partition: the leader's etcd traffic black-holed (a relay per controller and etcd member) →
  it has stepped down (`stepped_down`), and → another acts (`new_leader`), with whether the
  old leader stepped down first (`down_first`: never two acting at once).
The lease TTL is 1 s (etcd runs with a 50 ms heartbeat and 500 ms election timeout).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from nfvha.hatest.harness import Server, wait_until
from nfvha.hatest.measure import summary
from nfvha.hatest.servers import Controllers, Etcd, Postgres, Relay


def status(url: str) -> dict:
    try:
        return httpx.get(f"{url}/v1/controller", timeout=0.5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--mode", choices=("kill", "graceful", "partition"), default="kill")
    args = p.parse_args()

    state = Path(tempfile.mkdtemp(prefix="nfvha-bench-", dir="/tmp"))
    pg, etcd = Postgres(), Etcd(3)
    relays = [[Relay(("127.0.0.1", int(ep.rsplit(":", 1)[1]))) for ep in etcd.endpoints] for _ in range(3)]
    ctls = Controllers(state, pg.url, [[f"127.0.0.1:{r.port}" for r in rs] for rs in relays])
    acting, stepped, down_first = [], [], 0
    try:
        for r in range(args.rounds):
            lead = ctls.leader()
            old = ctls.urls[lead]
            at = time.time()
            if args.mode == "kill":
                ctls.servers[lead].proc.kill()
            elif args.mode == "graceful":
                ctls.servers[lead].proc.send_signal(signal.SIGTERM)
            else:
                for relay in relays[lead]:
                    relay.cut()
                wait_until(lambda o=old: not status(o).get("leading", True), 10, "the step-down")
                stepped.append((time.time() - at) * 1000)
            new = ctls.leader(but=old)
            since = datetime.fromisoformat(status(ctls.urls[new])["acting_since"]).timestamp()
            acting.append((since - at) * 1000)
            if args.mode == "partition":
                down_first += stepped[-1] <= acting[-1]
                for relay in relays[lead]:
                    relay.mend()
            else:  # bring the stopped controller back as a follower
                srv = ctls.servers[lead]
                srv.proc.wait(10)
                srv.log.close()
                ctls.servers[lead] = Server(srv.proc.args[3:], state, log_name=f"controller-{lead}")
            print(f"round {r}: {args.mode} → new leader acting after {acting[-1]:.0f} ms"
                  + (f", old stepped down after {stepped[-1]:.0f} ms" if stepped else ""), flush=True)
            wait_until(lambda n=new: all(status(u).get("leader") == ctls.urls[n] for u in ctls.urls), 15, "followers")
    finally:
        ctls.close()
        for relay in (x for rs in relays for x in rs):
            relay.close()
        etcd.stop()
        pg.stop()
    shutil.rmtree(state, ignore_errors=True)
    out = {"bench": "controller_failover", "mode": args.mode, "rounds": args.rounds, "new_leader": summary(acting)}
    if args.mode == "partition":
        out |= {"stepped_down": summary(stepped), "down_first": f"{down_first}/{args.rounds}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
