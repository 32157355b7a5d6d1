"""Measuring: percentiles, and a listener on the controller's event stream so that a
benchmark waits for events instead of polling the API (polling would load what it measures)."""

from __future__ import annotations

import json
import math
import queue
import threading
from collections import defaultdict

import httpx


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
