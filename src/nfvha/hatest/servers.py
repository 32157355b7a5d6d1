"""The real servers a controller cluster runs on, started for tests and benchmarks on
loopback: a PostgreSQL cluster in a temporary directory, an etcd cluster of N members, and
a TCP relay that can be cut (a network partition between one controller and etcd).
Debian's packages: postgresql, etcd-server (scripts/install-deps)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx

from .harness import Server, wait_until

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throw-away PostgreSQL cluster (fsync off), user `nfvha` without a password; `url` is its
    first database, `database()` makes another."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nfvha-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            pg = pwd.getpwnam("postgres")
            os.chown(self.dir, pg.pw_uid, pg.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "nfvha", "--auth=trust", "-E", "UTF8")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200", "start")
        self._databases = 0
        self.url = self.database()

    def database(self) -> str:
        """A new, empty database: its URL."""
        self._databases += 1
        name = f"nfvha{self._databases}"
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "nfvha", name)
        return f"postgresql+asyncpg://nfvha@127.0.0.1:{self.port}/{name}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Etcd:
    """An etcd cluster of `members` on loopback, with short heartbeat and election timeouts so
    that leases as short as 1 s are honoured (etcd raises a TTL below ~1.5 × election timeout)."""

    def __init__(self, members: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nfvha-etcd-"))
        self.names = [f"e{k}" for k in range(members)]
        self.client_ports = {n: free_port() for n in self.names}
        self.peer_ports = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen] = {}
        self.cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        for n in self.names:
            self.start(n, "new")
        wait_until(lambda: all(self.healthy(n) for n in self.names), 20, "etcd members healthy")

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.client_ports[n]}" for n in self.names]

    def start(self, name: str, state: str = "existing") -> None:
        c, p = self.client_ports[name], self.peer_ports[name]
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 -- the process writes it
        self.procs[name] = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(self.dir / name),
             "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
             "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
             "--initial-cluster", self.cluster, "--initial-cluster-state", state,
             "--heartbeat-interval", "50", "--election-timeout", "500"], stdout=log, stderr=log)
        log.close()

    def healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.client_ports[name]}/health", timeout=1).json().get(
                "health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Relay:
    """A TCP relay to `target` on a port of its own; `cut()` makes it a black hole (connections
    stay open, nothing passes, new ones hang): a partition, not a refusal. `mend()` heals it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = threading.Event()
        self.open.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.open.clear()

    def mend(self) -> None:
        for s in self._conns:  # what was stuck in the partition is gone, as after a real one
            try:
                s.close()
            except OSError:
                pass
        self._conns.clear()
        self.open.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        self._conns.append(client)
        self.open.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        self._conns.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while not self.open.is_set():  # a black hole: hold it, then drop it at mend()
                    if self.open.wait(0.05):
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
        self.mend()


def wait_for_leader(urls: list[str], timeout: float = 20.0, but: str | None = None) -> str:
    """The URL of the controller that leads (other than `but`), once one does."""
    def leader() -> str | None:
        for url in urls:
            if url == but:
                continue
            try:
                if httpx.get(f"{url}/v1/controller", timeout=0.5).json()["leading"]:
                    return url
            except (httpx.HTTPError, ValueError, KeyError):
                continue
        return None
    return wait_until(leader, timeout, "a leader")  # type: ignore[return-value]


class Controllers:
    """`n` controllers of one cluster on loopback, sharing `store`; `etcd[k]` are controller
    k's etcd endpoints (through relays, for partitions), or one list for all."""

    def __init__(self, state: Path, store: str, etcd: list[str] | list[list[str]], n: int = 3,
                 args: tuple[str, ...] = ()) -> None:
        self.state = state
        self.servers: list[Server] = []
        self.urls: list[str] = []
        per = etcd if etcd and isinstance(etcd[0], list) else [etcd] * n
        try:
            for k in range(n):
                port = free_port()
                (state / f"ctl{k}").mkdir(exist_ok=True)
                self.servers.append(Server(
                    ["controller", "--api", f"127.0.0.1:{port}", "--state-dir", str(state / f"ctl{k}"), "--store",
                     store, "--etcd", ",".join(per[k]), "-v", *args], state, log_name=f"controller-{k}"))
                self.urls.append(self.servers[-1].url)
        except BaseException:
            self.close()
            raise

    def leader(self, but: str | None = None, timeout: float = 20.0) -> int:
        return self.urls.index(wait_for_leader(self.urls, timeout, but))

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
