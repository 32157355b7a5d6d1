"""The `libvirt` driver: instances are libvirt domains (QEMU/KVM, or TCG where KVM is absent).

Two kinds of domain:
- nfvha's own, from a `vm` spec: a transient domain `nfvha-<id>-<gen>` (a fresh name for
  each start) whose channel and console sockets are in the agent's state dir;
- an operator's existing domain (`vm.domain`), adopted: it carries the nfvha channel
  (`nfvha virt channel-xml` prints the element) and, to be found by `discover()`, nfvha's
  metadata element with the heartbeat flag — the seeds' flavor extra spec, for libvirt.

Exits: libvirt's lifecycle events arrive through its event loop run on asyncio
(libvirtaio), but libvirt reports a QEMU killed under it only after about 1.6 s of
cleanup. So the driver also holds a pidfd on each domain's QEMU process: its end is the
instance's exit, seen within a millisecond; a guest shutdown that libvirt announced just
before makes it a clean one. Blocking libvirt calls (start, shutdown, destroy) run in
worker threads: the connection is thread-safe and the event loop stays free for heartbeats.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import libvirtaio

from ..control import InstanceSpec, VmSpec
from .base import DriverError, Exit, ExitCallback, pid_exiting, socket_path
from .domxml import NS, domain_xml, live_sockets

STOPPED_DETAIL = {libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
                  libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "restored from a snapshot"}
_event_impl: asyncio.AbstractEventLoop | None = None


@dataclass
class _Dom:
    name: str
    owned: bool  # nfvha's transient domain, not an operator's
    channel: str | None = None
    console: str | None = None
    pid: int | None = None
    pidfd: int = -1
    shutdown: bool = False  # libvirt announced a guest shutdown
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its exit was seen and reported


def _ensure_event_impl() -> None:
    """libvirt's event loop can be registered once per process: on the running asyncio loop."""
    global _event_impl
    loop = asyncio.get_running_loop()
    if _event_impl is None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised: do not print them too
        libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        _event_impl = loop
    elif _event_impl is not loop:
        raise DriverError("the libvirt driver is bound to the first event loop that used it")


class LibvirtDriver:
    name = "libvirt"

    def __init__(self, state_dir: Path, on_exit: ExitCallback, uri: str = "qemu:///system",
                 domain_type: str = "qemu") -> None:
        self.state_dir = state_dir
        self.on_exit = on_exit
        self.uri = uri
        self.domain_type = domain_type
        self._doms: dict[str, _Dom] = {}
        self._by_name: dict[str, str] = {}
        self._conn: libvirt.virConnect | None = None
        self._cleanups: set[asyncio.Future] = set()
        for d in ("ch", "con", "log"):
            (state_dir / d).mkdir(parents=True, exist_ok=True)

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            _ensure_event_impl()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise DriverError(f"cannot connect to libvirt at {self.uri}: {exc}") from None
            self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
            # a libvirtd restart closes the connection: the next call opens a new one (the
            # pidfds on QEMU keep watching meanwhile); keepalives notice a dead peer
            self._conn.registerCloseCallback(self._closed, None)
            self._conn.setKeepAlive(5, 3)
        return self._conn

    def _closed(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        if self._conn is conn:
            self._conn = None

    def channel_path(self, instance_id: str) -> str | None:
        dom = self._doms.get(instance_id)
        return dom.channel if dom else None

    def console_path(self, instance_id: str) -> str | None:
        dom = self._doms.get(instance_id)
        return dom.console if dom else None

    def running(self, instance_id: str) -> bool:
        dom = self._doms.get(instance_id)
        return dom is not None and not dom.ended.is_set()

    def pid(self, instance_id: str) -> int | None:
        return self._doms[instance_id].pid if self.running(instance_id) else None

    def _meta(self, dom: libvirt.virDomain) -> ET.Element | None:
        try:
            return ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
        except libvirt.libvirtError:
            return None  # no nfvha element

    def discover(self) -> dict[str, bool]:
        """The operator's domains that carry nfvha's metadata element: name → heartbeat flag."""
        try:
            domains = self.conn.listAllDomains()
        except libvirt.libvirtError as exc:
            raise DriverError(f"listing domains: {exc.get_error_message()}") from None
        found = {}
        for dom in domains:
            meta = self._meta(dom)
            if meta is not None and meta.get("instance") is None:  # nfvha's own name their instance
                found[dom.name()] = meta.get("heartbeat", "on") != "off"
        return found

    async def start(self, instance_id: str, spec: InstanceSpec) -> None:
        """Start (or adopt, when it already runs) the instance's domain."""
        vm = spec.vm
        if vm is None:
            raise DriverError("the libvirt driver runs VMs: this instance has no `vm`")
        if self.running(instance_id):
            return
        old = self._doms.get(instance_id)
        self.conn  # noqa: B018 -- connect on the event loop, where libvirt's events must be registered
        try:
            dom = await asyncio.to_thread(self._start, instance_id, vm, old)
            channel, console = live_sockets(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise DriverError(f"starting the domain of instance {instance_id}: {exc.get_error_message()}") from None
        entry = _Dom(dom.name(), owned=vm.domain is None, channel=channel, console=console)
        if entry.channel is None and spec.heartbeat:
            raise DriverError(f"domain {entry.name} has no nfvha channel: add the element `nfvha virt channel-xml` "
                              "prints to its definition")
        if old is not None:
            self._by_name.pop(old.name, None)  # the old domain's late events are not this one's
        self._doms[instance_id], self._by_name[entry.name] = entry, instance_id
        self._watch(instance_id, entry)

    def _start(self, instance_id: str, vm: VmSpec, old: _Dom | None) -> libvirt.virDomain:
        conn = self.conn
        if vm.domain:
            dom = conn.lookupByName(vm.domain)
            if not dom.isActive():
                dom.create()
            return dom
        if old is None:  # this agent never ran it: an earlier agent's domain may still run
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                meta = self._meta(dom)
                if meta is not None and meta.get("instance") == instance_id:
                    return dom
        # A fresh name and sockets for each start: libvirt takes ~1.6 s to clean up after a
        # QEMU killed under it, and the replacement need not wait for that.
        for path in (old.channel, old.console) if old and old.owned else ():
            if path and os.path.exists(path):
                os.unlink(path)
        gen = uuid.uuid4().hex[:6]
        channel = socket_path(self.state_dir, "ch", f"{instance_id}.{gen}")
        console = socket_path(self.state_dir, "con", f"{instance_id}.{gen}")
        log = str(self.state_dir.resolve() / "log" / f"{instance_id}.console.log")
        xml = domain_xml(f"nfvha-{instance_id}-{gen}", vm, channel, console, instance_id, self.domain_type, log)
        return conn.createXML(xml, 0)

    def _watch(self, instance_id: str, entry: _Dom) -> None:
        try:
            entry.pid = int(Path(f"/run/libvirt/qemu/{entry.name}.pid").read_text())
            entry.pidfd = os.pidfd_open(entry.pid)
        except (OSError, ValueError):
            return  # a remote libvirt, or no pid file: libvirt's own events must do
        asyncio.get_running_loop().add_reader(entry.pidfd, self._qemu_ended, instance_id, entry)

    def _unwatch(self, entry: _Dom) -> None:
        if entry.pidfd >= 0:
            asyncio.get_running_loop().remove_reader(entry.pidfd)
            os.close(entry.pidfd)
            entry.pidfd = -1

    def _qemu_ended(self, instance_id: str, entry: _Dom) -> None:
        at = time.monotonic()
        how = "after the guest shut down" if entry.shutdown else "without a guest shutdown (killed or crashed)"
        self._ended(instance_id, entry, Exit(at, entry.shutdown, f"domain {entry.name}: QEMU ended {how}"))

    def _ended(self, instance_id: str, entry: _Dom, ex: Exit) -> None:
        self._unwatch(entry)
        if not entry.ended.is_set():
            entry.ended.set()
            self.on_exit(instance_id, ex)

    def _on_lifecycle(self, conn: object, dom: libvirt.virDomain, event: int, detail: int, opaque: object) -> None:
        at = time.monotonic()
        name = dom.name()
        iid = self._by_name.get(name)
        entry = self._doms.get(iid) if iid else None
        if iid is None or entry is None or entry.name != name:
            return  # not ours, or an earlier start's domain
        if event == libvirt.VIR_DOMAIN_EVENT_SHUTDOWN:
            entry.shutdown = True
        elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            clean = detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN
            what = STOPPED_DETAIL.get(detail, f"stopped ({detail})")
            self._ended(iid, entry, Exit(at, clean, f"domain {name} {what}"))

    def exiting(self, instance_id: str) -> bool:
        return not self.running(instance_id) or pid_exiting(self._doms[instance_id].pid)

    def _domain(self, instance_id: str) -> libvirt.virDomain:
        entry = self._doms.get(instance_id)
        if entry is None or entry.ended.is_set():
            raise DriverError(f"instance {instance_id} is not running")
        try:
            return self.conn.lookupByName(entry.name)
        except libvirt.libvirtError as exc:
            raise DriverError(f"domain {entry.name}: {exc.get_error_message()}") from None

    async def _wait_ended(self, instance_id: str, grace: float) -> bool:
        try:
            async with asyncio.timeout(grace):
                await self._doms[instance_id].ended.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self, instance_id: str, grace: float = 5.0) -> None:
        """ACPI shutdown (after resuming a paused domain); destroy after `grace` seconds."""
        if not self.running(instance_id):
            return
        dom = self._domain(instance_id)
        try:
            if dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED:
                await asyncio.to_thread(dom.resume)
            await asyncio.to_thread(dom.shutdown)
        except libvirt.libvirtError:
            pass  # it may have gone meanwhile; destroy settles it
        if not await self._wait_ended(instance_id, grace):
            await self.kill(instance_id)

    async def kill(self, instance_id: str) -> None:
        """Destroy the domain. Its QEMU is gone within milliseconds (the pidfd says so), but
        libvirt's destroy returns ~1.5 s later, after its clean-up: a restart need not wait
        for that (it uses a fresh name), so the call finishes in the background."""
        if not self.running(instance_id):
            return
        task = asyncio.ensure_future(asyncio.to_thread(self._destroy, self._domain(instance_id)))
        self._cleanups.add(task)  # owned here: close() waits for what is still running
        task.add_done_callback(self._cleanups.discard)
        await self._wait_ended(instance_id, 10.0)

    @staticmethod
    def _destroy(dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass  # already gone

    async def inject(self, instance_id: str, kind: str) -> None:
        if kind == "crash":  # QEMU dies under libvirt: what a hypervisor crash looks like
            pid = self.pid(instance_id)
            if pid is None:
                raise DriverError(f"no QEMU process known for instance {instance_id}")
            os.kill(pid, signal.SIGKILL)
        elif kind == "hang":
            try:
                await asyncio.to_thread(self._domain(instance_id).suspend)
            except libvirt.libvirtError as exc:
                raise DriverError(f"suspend: {exc.get_error_message()}") from None
        else:
            raise DriverError(f"the libvirt driver cannot inject {kind!r}: the guest's application is out of "
                              "its reach (use the guest's console)")

    async def remove(self, instance_id: str) -> None:
        entry = self._doms.get(instance_id)
        if entry is None:
            return
        if entry.owned:
            await self.stop(instance_id)
        self._unwatch(entry)
        del self._doms[instance_id]
        self._by_name.pop(entry.name, None)

    async def close(self) -> None:
        """Leave every domain running: VMs outlive their agent, and the next one adopts them."""
        for entry in self._doms.values():
            self._unwatch(entry)
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None
