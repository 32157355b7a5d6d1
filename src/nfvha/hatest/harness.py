"""Run nfvha's own processes for real and drive them through the API (tests and benchmarks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

NFVHA = [sys.executable, "-m", "nfvha.cli"]


def guest_command(name: str, interval_ms: int = 100, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nfvha.guest", "--channel", "unix:{channel}", "--name", name,
            "--interval-ms", str(interval_ms), *extra]


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Server:
    """A running nfvha process (up, controller or agent) and a client for its API."""

    def __init__(self, args: list[str], state_dir: Path, *, url_pattern: str | None = r"http://[\d.]+:\d+",
                 prefix: tuple[str, ...] = (), log_name: str | None = None) -> None:
        self.state_dir = state_dir
        self.log = open(state_dir / f"{log_name or args[0]}.out", "a+")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen([*prefix, *NFVHA, *args], stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = ""
        if url_pattern:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            match = re.search(url_pattern, line)
            if not match:
                self.stop()
                raise AssertionError(f"nfvha {args[0]} did not start: {line!r}\n{self.logs()}")
            self.url = match.group(0)
            self.api = httpx.Client(base_url=self.url, timeout=30)

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.log.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if code not in (0, -signal.SIGKILL):  # killed: the test's own doing
            print(f"nfvha exited with {code}:\n{self.logs()}", file=sys.stderr)
        self.log.close()
        return code

    # ---- API helpers ----
    def create(self, name: str, command: list[str] | None = None, heartbeat: bool = True, **kw: object) -> dict:
        """A process instance (`command`), or a VM (`vm=...`)."""
        body = {"name": name, "heartbeat": heartbeat, **kw}
        if command is not None:
            body["command"] = command
        resp = self.api.post("/v1/instances", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def instance(self, iid: str) -> dict:
        return self.api.get(f"/v1/instances/{iid}").json()

    def faults(self, iid: str | None = None) -> list[dict]:
        return self.api.get("/v1/faults", params={"instance_id": iid} if iid else {}).json()

    def wait_heartbeating(self, iid: str, timeout: float = 15.0) -> dict:
        return wait_until(lambda: (i := self.instance(iid))["heartbeat_status"] == "heartbeating" and i,
                          timeout, f"{iid} heartbeating")  # type: ignore[return-value]

    def inject(self, iid: str, kind: str) -> None:
        resp = self.api.post(f"/v1/instances/{iid}/faults", json={"kind": kind})
        assert resp.status_code == 202, resp.text

    def wait_fault(self, iid: str, done: Callable[[dict], bool] = lambda f: True, timeout: float = 15.0) -> dict:
        """The first fault of the instance for which `done` holds."""
        return wait_until(lambda: next((f for f in self.faults(iid) if done(f)), None), timeout,
                          f"a fault of {iid}")  # type: ignore[return-value]


def agent_dir(state: Path, host: str) -> Path:
    return state / f"agent-{host}"


@contextmanager
def cluster(state: Path, hosts: list[str]) -> Iterator[Server]:
    """`nfvha controller` and one `nfvha agent` per host name, all connected; yields the controller."""
    ctl = Server(["controller", "--api", "127.0.0.1:0", "--state-dir", str(state / "ctl")], state)
    agents: list[Server] = []
    try:
        for h in hosts:
            agents.append(Server(["agent", "--controller", ctl.url, "--host", h, "--state-dir",
                                  str(agent_dir(state, h))], state, url_pattern=None))
        wait_until(lambda: {h["name"] for h in ctl.api.get("/v1/hosts").json() if h["connected"]} == set(hosts),
                   what="every agent connected")
        yield ctl
    finally:
        for agent in agents:
            agent.stop()
        ctl.stop()


class Receiver:
    """A webhook receiver on loopback that checks signatures; it can refuse the first N requests."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.received: list[dict] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail_first:
                    receiver.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                receiver.received.append({"event": json.loads(body), "body": body, "at": time.time(),
                                          "signature_ok": hmac.compare_digest(
                                              expected, self.headers.get("X-Nfvha-Signature", ""))})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def events(self, type_: str) -> list[dict]:
        return [r["event"] for r in self.received if r["event"]["type"] == type_]
