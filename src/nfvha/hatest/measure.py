"""Measuring: percentiles, and a listener on the controller's event stream so that a
benchmark waits for events instead of polling the API (polling would load what it measures)."""

from __future__ import annotations

import json
import math
import queue
import threading
from collections import defaultdict

import httpx

from .harness import Server


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 1), "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values), 1)}


class EventWatcher:
    """Reads /v1/events in a thread; `wait(subject, type)` returns the next such event."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/v1/events"
        self._queues: dict[str, queue.Queue] = defaultdict(queue.Queue)
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(10):
            raise TimeoutError(f"no event stream at {self.url}")

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=None) as resp:
                for line in resp.iter_lines():
                    self._ready.set()
                    if line.startswith("data: "):
                        ev = json.loads(line[6:])
                        self._queues[ev["subject"]].put(ev)
        except httpx.HTTPError:
            pass  # the server stopped: waiters time out

    def wait(self, subject: str, type_: str, timeout: float = 15.0) -> dict:
        q = self._queues[subject]
        while True:
            ev = q.get(timeout=timeout)
            if ev["type"] == type_:
                return ev


def inject_in_rotation(srv: Server, events: EventWatcher, ids: list[str], kind: str, count: int,
                       concurrency: int = 1, timeout: float = 15.0) -> list[str]:
    """Inject `count` faults of `kind`, each into an instance not in a fault now, and wait for
    each to be recovered before that instance takes the next; returns the fault ids."""
    fault_ids: list[str] = []
    lock = threading.Lock()
    free: queue.Queue[str] = queue.Queue()
    for iid in ids:
        free.put(iid)

    def worker() -> None:
        while True:
            iid = free.get()
            with lock:
                if len(fault_ids) >= count:
                    free.put(iid)  # wakes the next idle worker, which ends too
                    return
            srv.inject(iid, kind)
            ev = events.wait(iid, "nfvha.instance.recovered", timeout)
            with lock:
                fault_ids.append(ev["data"]["fault_id"])
            free.put(iid)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return fault_ids
