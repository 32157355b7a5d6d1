"""The `nfvha` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="nfvha: high availability for network functions in VMs.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
fault_app = typer.Typer(help="Inject faults (for demos and tests).", no_args_is_help=True)
app.add_typer(fault_app, name="fault")
image_app = typer.Typer(help="The reference guest image.", no_args_is_help=True)
app.add_typer(image_app, name="image")
virt_app = typer.Typer(help="Helpers for hypervisor configuration.", no_args_is_help=True)
app.add_typer(virt_app, name="virt")
console = Console()

DEFAULT_API = "127.0.0.1:7470"
ApiOpt = Annotated[str, typer.Option("--api", envvar="NFVHA_API",
                                     help="controller API, HOST:PORT or URL; several, comma-separated, are tried "
                                          "in turn")]
StateOpt = Annotated[Path, typer.Option("--state-dir", help="where the store, channels and logs live")]
DriverOpt = Annotated[str, typer.Option(help="process | qemu | libvirt: what an instance is on this host")]
AccelOpt = Annotated[str, typer.Option(help="tcg | kvm: how the qemu and libvirt drivers run VMs")]
UriOpt = Annotated[str, typer.Option(help="libvirt connection URI")]
HostRootOpt = Annotated[bool, typer.Option(help="let VMs mount this host's / read-only over 9p (the reference "
                                                "image's way to run Python; test and demo images only)")]
DRIVERS = ("process", "qemu", "libvirt")


def _driver_config(driver: str, accel: str) -> None:
    if driver not in DRIVERS:
        raise typer.BadParameter(f"--driver must be one of {', '.join(DRIVERS)}, not {driver!r}")
    if accel not in ("tcg", "kvm"):
        raise typer.BadParameter(f"--accel must be tcg or kvm, not {accel!r}")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nfvha"


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def api_url(api: str) -> str:
    return api.rstrip("/") if "://" in api else f"http://{api}"


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _serve(main: Callable[[], Coroutine[object, object, None]]) -> None:
    """Run a server; what the machine refuses (a port in use, a state dir that cannot be
    made, a store it cannot use) is one line naming it, not a traceback."""
    from .runner import run_bounded
    from .store.db import StoreError

    try:
        run_bounded(main())
    except* (OSError, StoreError) as group:
        console.print(f"[red]nfvha: {group.exceptions[0]}[/]")
        raise typer.Exit(1) from None


def demo_command(name: str, interval_ms: int) -> list[str]:
    return [sys.executable, "-m", "nfvha.guest.demo", "--channel", "unix:{channel}",
            "--name", name, "--interval-ms", str(interval_ms)]


# ---- servers -------------------------------------------------------------------------------

@app.command()
def up(demo: Annotated[int, typer.Option(help="start N demo instances (demo-1..N) if missing")] = 0,
       api: Annotated[str, typer.Option(help="HOST:PORT for the API (port 0: any free port)")] = DEFAULT_API,
       state_dir: StateOpt = None,  # type: ignore[assignment]
       demo_interval_ms: Annotated[int, typer.Option(help="the demo guests' heartbeat interval")] = 250,
       miss_threshold: Annotated[int, typer.Option(min=1, help="missed challenges that make a fault")] = 2,
       driver: DriverOpt = "process", accel: AccelOpt = "tcg", libvirt_uri: UriOpt = "qemu:///system",
       allow_host_root: HostRootOpt = False,
       verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the controller and an agent in one process on embedded defaults (all-in-one).

    With --driver qemu or libvirt, the demo instances are VMs of the reference guest image
    (built into the state dir on first use; it implies --allow-host-root)."""
    from .agent.service import Agent, AgentConfig
    from .controller.service import Controller

    _logging(verbose)
    _driver_config(driver, accel)
    host, port = split_hostport(api)
    state = state_dir or default_state_dir()

    async def main() -> None:
        ctl = Controller(state)
        async with asyncio.TaskGroup() as tg:
            ctl_task = tg.create_task(ctl.run(host, port))
            await ctl.ready.wait()
            url = f"http://{host}:{ctl.port}"
            agent = Agent(AgentConfig(host=socket.gethostname(), state_dir=state, miss_threshold=miss_threshold,
                                      controller=f"ws://{host}:{ctl.port}/v1/agent", driver=driver, accel=accel,
                                      libvirt_uri=libvirt_uri,
                                      allow_host_root=allow_host_root or bool(demo and driver != "process")))
            agent_task = tg.create_task(agent.run())
            await agent.link.connected.wait()
            if demo:
                vm = None if driver == "process" else await asyncio.to_thread(_reference_vm, state, demo_interval_ms)
                await _ensure_demo(url, demo, demo_interval_ms, vm)
            print(f"nfvha API at {url} (OpenAPI: {url}/docs), state in {state}", flush=True)
            await _until_signalled()
            # the controller first: it must not see its own host's agent leave and judge the host
            # down while shutting down; then the agent, which stops this host's instances
            ctl_task.cancel()
            await asyncio.wait([ctl_task])
            agent_task.cancel()

    _serve(main)


def _reference_vm(state: Path, interval_ms: int) -> dict:
    from .virt import image

    out = state / "image"
    if not (out / "vm.json").exists():
        image.build(out)
    return image.vm_spec(out.resolve(), interval_ms)


async def _ensure_demo(url: str, n: int, interval_ms: int, vm: dict | None = None) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        have = {i["name"] for i in (await client.get("/v1/instances")).json()}
        for k in range(1, n + 1):
            name = f"demo-{k}"
            if name not in have:
                body = {"vm": vm} if vm else {"command": demo_command(name, interval_ms)}
                resp = await client.post("/v1/instances", json={"name": name, "heartbeat": True, **body})
                resp.raise_for_status()


@app.command()
def controller(api: Annotated[str, typer.Option(help="HOST:PORT to serve the API on")] = DEFAULT_API,
               state_dir: StateOpt = None,  # type: ignore[assignment]
               sla: Annotated[str, typer.Option(help="SAL1 | SAL2 | SAL3: the level faults are judged by")] = "SAL1",
               fence: Annotated[str, typer.Option(help="none | ipmi | netns: how a failed host is confirmed off "
                                                       "before its instances move (none: they never move)")] = "none",
               fence_config: Annotated[Path | None, typer.Option(help="ipmi: JSON file of the hosts' BMCs")] = None,
               fence_netns_prefix: Annotated[str, typer.Option(help="netns: host H is namespace PREFIX+H")] = "nfvha-",
               suspect_after: Annotated[float, typer.Option(min=0.05, help="seconds of a host's silence before "
                                                                           "it is probed")] = 0.4,
               probe_window: Annotated[float, typer.Option(min=0.05, help="seconds a host's hostmon has to "
                                                                          "answer")] = 0.3,
               store: Annotated[str | None, typer.Option(
                   envvar="NFVHA_STORE", help="postgresql+asyncpg://USER@HOST:PORT/DB, shared by the controllers of "
                                              "a cluster (default: SQLite in the state dir)")] = None,
               etcd: Annotated[str | None, typer.Option(help="HOST:PORT,… of etcd: run as one of several "
                                                             "controllers, the elected leader acting")] = None,
               advertise: Annotated[str | None, typer.Option(help="this controller's URL as agents and clients "
                                                                  "reach it (default: http://API)")] = None,
               lease_ttl: Annotated[int, typer.Option(min=1, help="seconds of the leader's etcd lease: a dead "
                                                             "leader is replaced within about that")] = 1,
               verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run a controller (agents connect to it). With --etcd and a PostgreSQL --store, several
    controllers form a cluster: all serve the API, the elected leader acts (docs/cluster.md)."""
    from .controller.fencing import make_fence
    from .controller.leadership import EtcdLeadership
    from .controller.liveness import LivenessConfig
    from .controller.service import Controller

    _logging(verbose)
    host, port = split_hostport(api)
    if etcd and not (store or "").startswith("postgresql"):
        raise typer.BadParameter("--etcd (several controllers) needs a --store they share: postgresql+asyncpg://…")
    endpoints = [e.strip() for e in etcd.split(",")] if etcd else []
    for e in endpoints:
        split_hostport(e)
    if etcd and (port == 0 and not advertise):
        raise typer.BadParameter("--etcd with --api port 0 needs --advertise")
    url = advertise or f"http://{host}:{port}"
    try:
        ctl = Controller(state_dir or default_state_dir(), sla=sla,
                         fence=make_fence(fence, fence_config, fence_netns_prefix),
                         liveness=LivenessConfig(suspect_after=suspect_after, probe_window=probe_window),
                         store=store, advertise=advertise if etcd else None,
                         leadership=EtcdLeadership(endpoints, url, lease_ttl) if etcd else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(ctl.run(host, port))
            await ctl.ready.wait()
            print(f"nfvha controller API at http://{host}:{ctl.port}", flush=True)
            await _until_signalled()
            task.cancel()

    _serve(main)


@app.command()
def agent(controller: Annotated[str, typer.Option(help="the controller's URL or HOST:PORT; a cluster's, "
                                                      "comma-separated")] = DEFAULT_API,
          host: Annotated[str, typer.Option(help="this host's name")] = socket.gethostname(),
          state_dir: StateOpt = None,  # type: ignore[assignment]
          miss_threshold: Annotated[int, typer.Option(min=1, help="missed challenges that make a fault")] = 2,
          driver: DriverOpt = "process", accel: AccelOpt = "tcg", libvirt_uri: UriOpt = "qemu:///system",
          allow_host_root: HostRootOpt = False,
          probe: Annotated[str | None, typer.Option(help="HOST:PORT where this host's `nfvha hostmon` answers "
                                                         "(on a network other than the controller's)")] = None,
          capacity: Annotated[int | None, typer.Option(min=0, help="instances this host can run (default: no "
                                                                   "limit, or what an operator set)")] = None,
          beat_interval: Annotated[float, typer.Option(min=0.02, max=5.0, help="seconds between this host's "
                                                                               "heartbeats")] = 0.1,
          verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run an agent for this host. Its instances stop with it (SIGTERM), but for the libvirt
    driver's adopted domains (the operator's own), which keep running; instances that outlive
    a killed agent are adopted by the next one."""
    if probe is not None:
        split_hostport(probe)
    from .agent.service import Agent, AgentConfig

    _logging(verbose)
    _driver_config(driver, accel)
    from .agent.link import agent_url

    cfg = AgentConfig(host=host, state_dir=state_dir or default_state_dir() / "agent",
                      controller=",".join(agent_url(api_url(c.strip())) for c in controller.split(",")),
                      miss_threshold=miss_threshold, driver=driver, accel=accel,
                      libvirt_uri=libvirt_uri, allow_host_root=allow_host_root, probe=probe, capacity=capacity,
                      beat_interval=beat_interval)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(Agent(cfg).run())
            await _until_signalled()
            task.cancel()

    _serve(main)


@app.command()
def hostmon(listen: Annotated[str, typer.Option(help="HOST:PORT to answer probes on: this host's address on "
                                                     "a network other than the controller's")]) -> None:
    """Answer the controller's liveness probes for this host: its second witness, apart from the
    agent, so that a dead agent is told from a dead host. Run it beside the agent (`--probe`)."""
    from . import hostmon as mon

    host, port = split_hostport(listen)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(mon.serve(host, port))
            print(f"nfvha hostmon answering on {host}:{port}", flush=True)
            await _until_signalled()
            task.cancel()

    _serve(main)


# ---- images and hypervisor configuration ----------------------------------------------------

@image_app.command("build")
def image_build(out: Annotated[Path, typer.Option(help="where to write vmlinux, initrd.img and vm.json")] =
                Path.home() / ".cache" / "nfvha" / "image",
                interval_ms: Annotated[int, typer.Option(help="the guest daemon's heartbeat interval")] = 1000) -> None:
    """Build the reference guest image (Debian's kernel, busybox, the host's Python over 9p)."""
    from .virt import image

    print(json.dumps({"vm": image.build(out, interval_ms)}))


@virt_app.command("channel-xml")
def channel_xml(path: Annotated[str | None, typer.Option(help="the host socket (default: libvirt chooses)")] = None,
                heartbeat: Annotated[bool, typer.Option(help="the metadata's heartbeat flag")] = True) -> None:
    """Print the libvirt XML that makes a domain an nfvha instance: the <channel> element
    (under <devices>) and nfvha's metadata element (under <metadata>)."""
    from .virt.libvirt import channel_xml as chan
    from .virt.libvirt import metadata_xml

    print(f"<!-- under <devices> -->\n{chan(path)}\n<!-- under <metadata> -->\n{metadata_xml(heartbeat)}")


# ---- clients -------------------------------------------------------------------------------

def _request(api: str, method: str, path: str, **kw: object) -> httpx.Response:
    """Ask the controllers in turn (`--api A,B,C`) until one answers; a follower sends
    changes on to the leader (307), which is followed."""
    errors = []
    for addr in api.split(","):
        try:
            resp = httpx.request(method, api_url(addr.strip()) + path, timeout=30, follow_redirects=True, **kw)
        except httpx.HTTPError as exc:
            errors.append(f"{api_url(addr.strip())}: {exc}")
            continue
        _check(resp)
        return resp
    console.print(f"[red]cannot reach the nfvha API: {'; '.join(errors)}[/]")
    raise typer.Exit(2)


def _get(api: str, path: str) -> object:
    return _request(api, "GET", path).json()


def _check(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
        try:
            body = resp.json()
            msg = body.get("message") or body.get("detail")
        except ValueError:
            msg = resp.text
        console.print(f"[red]{resp.request.method} {resp.request.url.path}: HTTP {resp.status_code}: {msg}[/]")
        raise typer.Exit(1)


def _resolve(api: str, ref: str) -> dict:
    for inst in _get(api, "/v1/instances"):  # type: ignore[union-attr]
        if ref in (inst["id"], inst["name"]):
            return inst
    console.print(f"[red]no instance with id or name {ref!r}[/]")
    raise typer.Exit(1)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _faults_table(faults: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("detected", "instance", "reason", "detect ms", "notify ms", "recover ms", "recovery", "SLA"):
        t.add_column(col)
    for f in faults:
        sla = f["sla"]
        verdict = "missed" if "missed" in (sla["detection"], sla["recovery"]) else (
            "met" if sla["detection"] or sla["recovery"] else "-")
        t.add_row(f["detected_at"][11:23], f["instance_name"] or f["instance_id"][:8], f["reason"],
                  _ms(f["detection_ms"]), _ms(f["notification_ms"]), _ms(f["recovery_ms"]),
                  f"{f['recovery_action']}/{f['recovery_state']}", f"{sla['level']} {verdict}")
    return t


@app.command()
def status(api: ApiOpt = DEFAULT_API) -> None:
    """Hosts, instances and recent faults."""
    hosts = _get(api, "/v1/hosts")
    t = Table(title="hosts")
    for col in ("name", "state", "driver", "segment", "instances", "last seen"):
        t.add_column(col)
    for h in hosts:  # type: ignore[union-attr]
        state = h["state"] if h["state"] == "up" else f"[red]{h['state']}[/]"
        t.add_row(h["name"], state, h["driver"], h["segment"] + (" (reserved)" if h["reserved"] else ""),
                  f"{h['instances']}/{'-' if h['capacity'] is None else h['capacity']}",
                  (h["last_seen"] or "")[11:19])
    console.print(t)
    t = Table(title="instances")
    for col in ("name", "id", "host", "state", "heartbeat", "interval", "pid", "protocol errors"):
        t.add_column(col)
    for i in _get(api, "/v1/instances"):  # type: ignore[union-attr]
        errs = ", ".join(f"{k}={v}" for k, v in i["protocol_errors"].items()) or "-"
        t.add_row(i["name"], i["id"][:8], i["host"], i["state"], i["heartbeat_status"],
                  f"{i['interval_ms']} ms" if i["interval_ms"] else "-", str(i["pid"] or "-"), errs)
    console.print(t)
    console.print(_faults_table(_get(api, "/v1/faults?limit=10"), "recent faults"))  # type: ignore[arg-type]


@app.command()
def faults(api: ApiOpt = DEFAULT_API,
           as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
           instance: Annotated[str | None, typer.Option(help="only this instance (id or name)")] = None,
           limit: Annotated[int, typer.Option(min=1)] = 1000) -> None:
    """Faults with their detection, notification and recovery times."""
    path = f"/v1/faults?limit={limit}"
    if instance:
        path += f"&instance_id={_resolve(api, instance)['id']}"
    data = _get(api, path)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        console.print(_faults_table(data, "faults"))  # type: ignore[arg-type]


@fault_app.command("inject")
def fault_inject(instance: Annotated[str, typer.Argument(help="instance id or name")],
                 kind: Annotated[str, typer.Argument(help="hang | crash | unhealthy")],
                 api: ApiOpt = DEFAULT_API) -> None:
    """hang = SIGSTOP, crash = SIGKILL, unhealthy = the guest's health check fails."""
    if kind not in ("hang", "crash", "unhealthy"):
        raise typer.BadParameter(f"kind must be hang, crash or unhealthy, got {kind!r}")
    inst = _resolve(api, instance)
    _request(api, "POST", f"/v1/instances/{inst['id']}/faults", json={"kind": kind})
    console.print(f"injected {kind} into {inst['name']} ({inst['id']})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
