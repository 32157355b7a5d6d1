"""The guest daemon over a real unix socket, with the test playing the host."""

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from nfvha.guest import CommandCheck, GuestConfig, GuestDaemon, HttpCheck
from nfvha.guest.health import CallableCheck
from nfvha.wire import heartbeat as hb
from nfvha.wire.channel import HostChannel


class Host:
    """Connects like the agent and drives HostChannel with the loop clock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.chan = HostChannel(min_interval_ms=20)
        self.events: list = []

    async def connect(self) -> None:
        for _ in range(200):
            try:
                self.reader, self.writer = await asyncio.open_unix_connection(self.path)
                return
            except OSError:
                await asyncio.sleep(0.01)
        raise TimeoutError(self.path)

    async def pump(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Play the host's end for `seconds`, or until `until()` holds (a busy machine is slow)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end and not until():
            deadline = self.chan.next_deadline() or end
            try:
                data = await asyncio.wait_for(self.reader.read(65536), max(0.0, min(deadline, end) - loop.time()))
                if not data:
                    self.events += self.chan.closed(loop.time()).events
                    return
                out = self.chan.receive_data(data, loop.time())
            except TimeoutError:
                out = self.chan.tick(loop.time())
            self.events += out.events
            self.writer.write(out.data)

    def kinds(self) -> list[str]:
        return [type(e).__name__ + (f":{e.reason}" if isinstance(e, hb.Fault) else "") for e in self.events]


@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory(prefix="nfvha-") as d:
        yield str(Path(d) / "g.sock")


async def run_daemon(path: str, health=None, interval_ms: int = 50,
                     api_socket: str | None = None) -> tuple[GuestDaemon, asyncio.Task]:
    daemon = GuestDaemon(f"unix:{path}", GuestConfig(name="t", interval_ms=interval_ms), health, api_socket)
    task = asyncio.create_task(daemon.run(handle_signals=False))
    return daemon, task


async def test_daemon_registers_and_stays_healthy(sock_path):
    daemon, task = await run_daemon(sock_path)
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.5)
    assert host.kinds() == ["Registered", "Healthy"]
    daemon.stop("bye")
    await host.pump(0.2)
    assert host.kinds()[-1] == "Exited" and host.events[-1].log_msg == "bye"
    await task


async def test_a_local_socket_that_cannot_be_made_costs_no_heartbeat(sock_path):
    daemon, task = await run_daemon(sock_path, api_socket="/proc/nfvha-no-such-dir/api.sock")
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.5)
    assert host.kinds() == ["Registered", "Healthy"] and daemon.api is None
    daemon.stop()
    await task


async def test_failing_health_command_reports_unhealthy_with_the_reason(sock_path):
    daemon, task = await run_daemon(sock_path, CommandCheck([sys.executable, "-c", "raise SystemExit(3)"], 1.0),
                                    interval_ms=200)
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.8)
    assert "Fault:unhealthy" in host.kinds()
    fault = next(e for e in host.events if isinstance(e, hb.Fault))
    assert fault.detail == "health command exited 3"
    daemon.stop()
    await task


async def test_a_health_check_that_hangs_is_unhealthy_at_its_timeout_and_answers_never_wait(sock_path):
    async def stuck():
        await asyncio.sleep(60)

    daemon, task = await run_daemon(sock_path, CallableCheck(stuck, timeout=0.3), interval_ms=100)
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.8)
    # answered on time (healthy: no check has finished yet), then the check's timeout is the fault
    assert host.kinds()[:3] == ["Registered", "Healthy", "Fault:unhealthy"]
    assert "timed out after 300 ms" in host.events[2].detail
    daemon.stop()
    await task


async def test_a_check_slower_than_half_the_interval_is_no_fault(sock_path):
    async def slow():  # an emulated guest's HTTP check can take longer than 50 ms
        await asyncio.sleep(0.08)
        return True

    daemon, task = await run_daemon(sock_path, slow, interval_ms=100)
    host = Host(sock_path)
    await host.connect()
    await host.pump(1.0)
    assert "Healthy" in host.kinds()
    assert not [k for k in host.kinds() if k.startswith("Fault")], host.kinds()
    daemon.stop()
    await task


async def test_http_check_follows_the_application(sock_path):
    class App(BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):
            self.send_response(App.status)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), App)
    Thread(target=srv.serve_forever, daemon=True).start()
    try:
        daemon, task = await run_daemon(sock_path, HttpCheck(f"http://127.0.0.1:{srv.server_address[1]}/h", 1.0))
        host = Host(sock_path)
        await host.connect()
        await host.pump(0.3)
        App.status = 503
        await host.pump(0.3)
        App.status = 200
        await host.pump(0.3)
        assert host.kinds() == ["Registered", "Healthy", "Fault:unhealthy", "Healthy"]
        assert "HTTP 503" in host.events[2].detail
        daemon.stop()
        await task
    finally:
        srv.shutdown()


async def test_python_callable_check_and_forced_unhealthy(sock_path):
    state = {"ok": True}
    daemon, task = await run_daemon(sock_path, lambda: (state["ok"], "app says no"))
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.3)
    state["ok"] = False
    await host.pump(5.0, until=lambda: "Fault:unhealthy" in host.kinds())
    assert host.kinds() == ["Registered", "Healthy", "Fault:unhealthy"]
    assert host.events[-1].detail == "app says no"
    daemon.stop()
    await task


async def test_daemon_reregisters_after_the_host_reconnects(sock_path):
    daemon, task = await run_daemon(sock_path)
    host = Host(sock_path)
    await host.connect()
    await host.pump(0.3)
    host.writer.close()
    host2 = Host(sock_path)
    await host2.connect()
    await host2.pump(0.3)
    assert host2.kinds() == ["Registered", "Healthy"]
    daemon.stop()
    await task


async def test_daemon_ignores_garbage_from_the_host(sock_path):
    daemon, task = await run_daemon(sock_path)
    host = Host(sock_path)
    await host.connect()
    host.writer.write(b"nonsense\n" + json.dumps({"version": 1}).encode() + b"\n")
    await host.pump(0.3)
    assert host.kinds() == ["Registered", "Healthy"]
    assert daemon.chan.errors == {"bad_json": 1, "missing_field": 1}
    daemon.stop()
    await task


def test_bad_config_fails_at_start_naming_the_field():
    with pytest.raises(Exception, match="corrective_action"):
        GuestDaemon("unix:/tmp/x.sock", GuestConfig(corrective_action="explode"))
    with pytest.raises(Exception, match="heartbeat_interval_ms"):
        GuestDaemon("unix:/tmp/x.sock", GuestConfig(interval_ms=0))
