"""Who leads: one controller acts (agents, recovery, notification, routing); the others
serve reads and stand by.

`Solo` is the embedded default: one controller, always the leader. `EtcdLeadership` elects
on etcd's own primitives (tooz has no election on etcd): a lease, a transaction that creates
the leader key only if it does not exist (create_revision == 0), and a watch for its
deletion. The key's create revision is the leader's fencing token: it grows with every
election, and the store refuses a transaction that carries an older one.

A leader proves itself by keeping its lease alive (K8S-2). Keep-alives are sent every
ttl/4; when none has succeeded for `ttl/2` s the leader steps down on its own, before
etcd can expire the lease and elect another (it expires `ttl` s after the last keep-alive
etcd received, which is later than the last one that succeeded here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import etcd3gw
from etcd3gw.exceptions import Etcd3Exception, WatchTimedOut
from requests.exceptions import RequestException

log = logging.getLogger("nfvha.leadership")
KEY = "/nfvha/controller/leader"


class Leadership(Protocol):
    token: int | None  # the fencing token while leading, else None
    leader_url: str | None  # the current leader's advertised URL, if known

    async def campaign(self) -> int:
        """Block until this controller leads; its fencing token."""

    async def keep(self) -> None:
        """Return (or raise) when this controller can no longer prove it leads."""

    async def resign(self) -> None:
        """Step down now (a graceful stop): a follower takes over at once."""


class Solo:
    """One controller and no coordination service: it leads, always."""

    def __init__(self, url: str | None = None) -> None:
        self.token: int | None = None
        self.leader_url = url

    async def campaign(self) -> int:
        self.token = 1
        return 1

    async def keep(self) -> None:
        await asyncio.Future()

    async def resign(self) -> None:
        self.token = None


class EtcdUnavailableError(Exception):
    pass


class _Etcd:
    """etcd3gw over several endpoints: a call that cannot reach one tries the next."""

    def __init__(self, endpoints: list[str], timeout: float) -> None:
        self.clients = []
        for ep in endpoints:
            host, _, port = ep.rpartition(":")
            self.clients.append(etcd3gw.client(host=host, port=int(port), timeout=timeout))
        self.current = 0

    def call(self, fn) -> object:
        errors = []
        for k in range(len(self.clients)):
            client = self.clients[(self.current + k) % len(self.clients)]
            try:
                value = fn(client)
            except (Etcd3Exception, RequestException) as exc:
                errors.append(f"{client.host}:{client.port}: {type(exc).__name__}")
                continue
            self.current = (self.current + k) % len(self.clients)
            return value
        raise EtcdUnavailableError("; ".join(errors))


class EtcdLeadership:
    def __init__(self, endpoints: list[str], url: str, ttl: int = 1, timeout: float = 0.3) -> None:
        self.etcd = _Etcd(endpoints, timeout)
        self.url = url  # what this controller advertises: agents and clients are sent here
        self.ttl = ttl
        self.token: int | None = None
        self.leader_url: str | None = None
        self._lease = None

    async def _call(self, fn) -> object:
        return await asyncio.to_thread(self.etcd.call, fn)

    async def campaign(self) -> int:
        while True:
            try:
                lease = await self._call(lambda c: c.lease(self.ttl))
                token = await self._call(lambda c, lease=lease: self._create(c, lease))
                if token is not None:
                    self._lease, self.token, self.leader_url = lease, token, self.url
                    log.warning("this controller leads (token %d)", token)
                    return token
                await self._call(lambda c, lease=lease: lease.revoke())
                await self._follow()
            except EtcdUnavailableError as exc:
                self.leader_url = None
                log.error("etcd unreachable (%s): retrying", exc)
                await asyncio.sleep(0.2)

    def _create(self, client, lease) -> int | None:
        """Create the leader key if no one holds it: the revision that created it, or None."""
        key, value = etcd3gw.utils._encode(KEY), etcd3gw.utils._encode(self.url)
        result = client.transaction({
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": value, "lease": lease.id}}],
            "failure": [{"request_range": {"key": key}}]})
        if result.get("succeeded"):
            return int(result["header"]["revision"])
        kvs = result["responses"][0]["response_range"].get("kvs", [])
        self.leader_url = etcd3gw.utils._decode(kvs[0]["value"]).decode() if kvs else None
        return None

    async def _follow(self) -> None:
        """Wait until the leader key is gone (deleted, or its lease expired)."""
        while True:
            found = await self._call(lambda c: c.get(KEY, metadata=True))
            if not found:
                return
            value, meta = found[0]
            self.leader_url = value.decode()
            # from the revision after the one seen: a deletion in between is not missed
            after = int(meta["mod_revision"]) + 1
            if await self._call(lambda c, after=after: _deleted(c, after)):
                return

    async def keep(self) -> None:
        """Keep the lease alive; return when leadership can no longer be proven."""
        assert self._lease is not None
        lease, ok_at = self._lease, time.monotonic()
        while True:
            sent = time.monotonic()
            try:
                ttl = await asyncio.wait_for(self._call(lambda c: lease.refresh()), self.ttl / 2)
                if ttl <= 0:
                    log.error("the leader's lease expired: stepping down")
                    break
                ok_at = sent
            except (EtcdUnavailableError, TimeoutError) as exc:
                log.error("cannot renew the leader's lease: %s", exc or "timed out")
            if time.monotonic() - ok_at > self.ttl / 2:
                log.error("leadership unproven for %.0f ms: stepping down before the lease can expire",
                          (time.monotonic() - ok_at) * 1000)
                break
            await asyncio.sleep(max(0.0, self.ttl / 4 - (time.monotonic() - sent)))
        self.token = self.leader_url = None

    async def resign(self) -> None:
        lease, self._lease, self.token = self._lease, None, None
        if lease is not None:
            try:
                await self._call(lambda c: lease.revoke())  # deletes the key: followers see it at once
            except EtcdUnavailableError:
                pass  # it expires by itself


def _deleted(client, start_revision: int) -> bool:
    """Whether the leader key is deleted within a second (from `start_revision` on)."""
    try:
        client.watch_once(KEY, timeout=1.0, start_revision=start_revision, filters=["NOPUT"])
        return True
    except WatchTimedOut:
        return False
