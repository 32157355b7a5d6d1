"""Several compute hosts on one machine, for real: each host is a network namespace with its
own `nfvha agent` and `nfvha hostmon`, on two networks (bridges in the root namespace):

    management 10.77.0.0/24 — the controller (10.77.0.1) and the agents
    probe      10.78.0.0/24 — the controller's second path to each host's hostmon

A host can be killed (its links drop, then every process in it is SIGKILLed: a power cut),
frozen (SIGSTOP: a hung host), cut off (its links drop, its processes keep running) and
restored. The controller fences with `--fence netns`, which kills the namespace's processes.
Needs root; `Lab` removes what it made, and what a crashed earlier run left.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pyroute2 import IPRoute, NetlinkError, NetNS, netns

from ..controller.fencing import netns_pids
from .harness import Server, agent_dir, wait_until

PREFIX = "nfvhalab-"  # namespaces; the controller's netns fence is told the same prefix
LINK = "nl"  # root-side interface names: nl<i>m, nl<i>p; bridges nlbr-m, nlbr-p
NETS = {"m": "10.77.0", "p": "10.78.0"}


def _cleanup_stale() -> None:
    for ns in netns.listnetns():
        if ns.startswith(PREFIX):
            _kill_all(ns, signal.SIGKILL)
            netns.remove(ns)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if re.fullmatch(rf"{LINK}(\d+[mp]|br-[mp])", name):
                try:
                    ipr.link("del", index=link["index"])
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:  # a veth goes with its namespace's end, in its own time
                        raise


def _kill_all(ns: str, sig: int) -> int:
    pids = netns_pids(ns)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(pids)


@dataclass
class LabHost:
    name: str
    index: int
    agent_args: list[str] = field(default_factory=list)
    agent: Server | None = None
    hostmon: Server | None = None

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    def ip(self, net: str) -> str:
        return f"{NETS[net]}.{10 + self.index}"

    def link(self, net: str) -> str:
        return f"{LINK}{self.index}{net}"


class Lab:
    """A controller in the root namespace and hosts in namespaces; use as a context manager."""

    def __init__(self, state: Path, fence: str = "netns", controller_args: tuple[str, ...] = ()) -> None:
        self.state = state
        self.fence = fence
        self.controller_args = controller_args
        self.hosts: dict[str, LabHost] = {}
        self.ctl: Server | None = None

    def __enter__(self) -> Lab:
        _cleanup_stale()
        try:
            with IPRoute() as ipr:
                for net, prefix in NETS.items():
                    ipr.link("add", ifname=f"{LINK}br-{net}", kind="bridge")
                    idx = ipr.link_lookup(ifname=f"{LINK}br-{net}")[0]
                    ipr.addr("add", index=idx, address=f"{prefix}.1", prefixlen=24)
                    ipr.link("set", index=idx, state="up")
            self.ctl = Server(["controller", "--api", f"{NETS['m']}.1:0", "--state-dir", str(self.state / "ctl"),
                               "--fence", self.fence, "--fence-netns-prefix", PREFIX, "-v", *self.controller_args],
                              self.state)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts.values():
            self._stop_processes(host)
        if self.ctl is not None:
            self.ctl.stop()
        _cleanup_stale()

    @property
    def api(self) -> httpx.Client:
        assert self.ctl is not None
        return self.ctl.api

    # ---- hosts ---------------------------------------------------------------------------

    def add_hosts(self, *names: str, **agent_opts: object) -> None:
        """Make the hosts and start their hostmon and agent; return once every agent is connected."""
        for name in names:
            host = self.hosts[name] = LabHost(name, len(self.hosts) + 1)
            host.agent_args = [arg for k, v in agent_opts.items() for arg in (f"--{k.replace('_', '-')}", str(v))]
            netns.create(host.netns)
            with IPRoute() as ipr:
                for net in NETS:
                    ipr.link("add", ifname=host.link(net), kind="veth",
                             peer={"ifname": f"eth{net}", "net_ns_fd": host.netns})
                    bridge = ipr.link_lookup(ifname=f"{LINK}br-{net}")[0]
                    ipr.link("set", index=ipr.link_lookup(ifname=host.link(net))[0], master=bridge, state="up")
            with NetNS(host.netns) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                for net in NETS:
                    idx = ns.link_lookup(ifname=f"eth{net}")[0]
                    ns.addr("add", index=idx, address=host.ip(net), prefixlen=24)
                    ns.link("set", index=idx, state="up")
            self._start_processes(host)
        self.wait_connected(*names)

    def wait_connected(self, *names: str, timeout: float = 20.0) -> None:
        def connected() -> bool:
            hosts = {h["name"]: h for h in self.api.get("/v1/hosts").json()}
            return all(n in hosts and hosts[n]["connected"] and hosts[n]["state"] == "up" for n in names)
        wait_until(connected, timeout, f"hosts {', '.join(names)} connected")

    def _start_processes(self, host: LabHost) -> None:
        assert self.ctl is not None
        host.hostmon = Server(["hostmon", "--listen", f"{host.ip('p')}:7471"], self.state, url_pattern=None,
                              prefix=("ip", "netns", "exec", host.netns), log_name=f"hostmon-{host.name}")
        self._start_agent(host)

    def _start_agent(self, host: LabHost) -> None:
        assert self.ctl is not None
        host.agent = Server(["agent", "--controller", self.ctl.url, "--host", host.name,
                             "--state-dir", str(agent_dir(self.state, host.name)), "--probe", f"{host.ip('p')}:7471",
                             *host.agent_args, "-v"], self.state, url_pattern=None,
                            prefix=("ip", "netns", "exec", host.netns), log_name=f"agent-{host.name}")

    def _stop_processes(self, host: LabHost) -> None:
        _kill_all(host.netns, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        for server in (host.agent, host.hostmon):
            if server is not None:
                server.stop()
        _kill_all(host.netns, signal.SIGKILL)  # its instances, if the agent left any

    def _links(self, host: LabHost, state: str, nets: tuple[str, ...] = ("m", "p")) -> None:
        with IPRoute() as ipr:
            for net in nets:
                ipr.link("set", index=ipr.link_lookup(ifname=host.link(net))[0], state=state)

    # ---- faults ----------------------------------------------------------------------------

    def kill(self, name: str) -> float:
        """Power cut: the links drop first (so no goodbye gets out), then every process dies.
        Returns the wall-clock time of the cut."""
        host = self.hosts[name]
        self._links(host, "down")
        at = time.time()
        _kill_all(host.netns, signal.SIGKILL)
        return at

    def kill_agent(self, name: str) -> float:
        """Only the agent dies (SIGKILL): the host, its hostmon and its instances keep running."""
        agent = self.hosts[name].agent
        assert agent is not None
        at = time.time()
        agent.proc.kill()
        agent.proc.wait()
        return at

    def start_agent(self, name: str) -> None:
        host = self.hosts[name]
        if host.agent is not None:
            host.agent.stop()
        self._start_agent(host)

    def freeze(self, name: str) -> float:
        """A hung host: every process in it stops (SIGSTOP); its kernel still routes."""
        at = time.time()
        _kill_all(self.hosts[name].netns, signal.SIGSTOP)
        return at

    def cut(self, name: str, nets: tuple[str, ...] = ("m", "p")) -> float:
        """Cut the host off (by default from both networks) while everything in it runs on."""
        self._links(self.hosts[name], "down", nets)
        return time.time()

    def restore(self, name: str) -> None:
        """Links up, frozen processes thawed; a host with no process left boots again (hostmon,
        agent) and its agent reconnects."""
        host = self.hosts[name]
        self._links(host, "up")
        _kill_all(host.netns, signal.SIGCONT)
        if host.agent is None or host.agent.proc.poll() is not None:
            self._stop_processes(host)
            self._start_processes(host)

    def processes(self, name: str) -> int:
        return len(netns_pids(self.hosts[name].netns))


def instance_copies() -> Counter[str]:
    """Live processes per instance, across every host of the machine (by NFVHA_INSTANCE_ID)."""
    copies: Counter[str] = Counter()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(b"NFVHA_INSTANCE_ID="):
                copies[var[18:].decode()] += 1
    return copies


class CopyWatch:
    """Samples instance_copies() in a thread for as long as it runs: the most copies of each
    instance ever seen at one moment (the property is 1, never 2)."""

    def __init__(self) -> None:
        self.max: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CopyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for iid, n in instance_copies().items():
                self.max[iid] = max(self.max[iid], n)
            self.samples += 1
            time.sleep(0.002)
