"""The REST API under /v1 (OpenAPI at /openapi.json, docs at /docs)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from .. import __version__, clock
from ..control import Command, InstanceStatus, Result
from ..store.models import (
    Evacuation,
    Fault,
    Host,
    HostFailure,
    Instance,
    ReplicaSet,
    Segment,
    ServerGroup,
    Subscription,
)
from . import instances
from .agents import AgentUnavailableError
from .events import iso
from .instances import RefusedError, host_loads
from .schemas import (
    ActionRequest,
    ControllerOut,
    FaultInject,
    FaultOut,
    HostFailureOut,
    HostOut,
    HostUpdate,
    Injected,
    InstanceCreate,
    InstanceOut,
    Name,
    ReplicaSetCreate,
    ReplicaSetOut,
    ReplicaSetUpdate,
    SegmentOut,
    SegmentPut,
    ServerGroupCreate,
    ServerGroupOut,
    SubscriptionCreate,
    SubscriptionOut,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from .service import Controller


def create_app(ctl: Controller) -> FastAPI:
    app = FastAPI(title="nfvha", version=__version__,
                  description="High availability for network functions: instances, faults with their "
                              "detection/notification/recovery times, and fault notifications.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # name the field: "body.name: String should have at most 64 characters"
        errors = exc.errors()
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse(status_code=422, content={"message": message, "detail": [
            {"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errors]})

    async def fetch(s, model: type[T], key: str, what: str) -> T:
        row = await s.get(model, key)
        if row is None:
            raise HTTPException(404, f"no {what} {key}")
        return row

    async def get_instance(s, instance_id: str) -> Instance:
        return await fetch(s, Instance, instance_id, "instance with id")

    @app.middleware("http")
    async def _followers_read(request: Request, call_next) -> Response:
        """Every controller serves reads from the shared store; the leader alone changes things
        (and streams live events): a follower sends those requests on to it (307)."""
        path = request.url.path
        if ctl.leading or (request.method in ("GET", "HEAD") and path != "/v1/events") or path == "/v1/controller":
            return await call_next(request)
        leader = ctl.leadership.leader_url
        if leader and leader != ctl.url:
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"{leader}{path}{query}", status_code=307)
        return JSONResponse(status_code=503, headers={"Retry-After": "1"},
                            content={"detail": "no controller leads right now: retry shortly"})

    @app.get("/v1/controller")
    async def controller_status() -> ControllerOut:
        """This controller: whether it leads (and since when, with which fencing token), and who does."""
        return ControllerOut(url=ctl.url, leading=ctl.leading, leader=ctl.leadership.leader_url,
                             token=ctl.leadership.token if ctl.leading else None,
                             acting_since=iso(ctl.acting_since))

    @app.exception_handler(RefusedError)
    async def _refused(_: Request, exc: RefusedError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.get("/v1/hosts")
    async def list_hosts() -> list[HostOut]:
        async with ctl.sessions() as s:
            _, load = await host_loads(s)
            return [HostOut.of(h, ctl.hosts.state(h.name) if ctl.leading else h.state, load[h.name])
                    for h in (await s.scalars(select(Host).order_by(Host.name))).all()]

    @app.patch("/v1/hosts/{name}")
    async def update_host(name: str, body: HostUpdate) -> HostOut:
        """An operator's settings of a host: its failover segment, whether it is kept free for
        evacuations (reserved), how many instances it may run."""
        async with ctl.sessions() as s, s.begin():
            h = await fetch(s, Host, name, "host named")
            for field, value in body.model_dump(exclude_none=True).items():
                setattr(h, field, value)
            _, load = await host_loads(s)
            out = HostOut.of(h, ctl.hosts.state(name), load[name])
        ctl.host_recovery.wake()
        return out

    @app.get("/v1/segments")
    async def list_segments() -> list[SegmentOut]:
        async with ctl.sessions() as s:
            methods = {g.name: g.recovery_method for g in (await s.scalars(select(Segment))).all()}
            hosts = (await s.execute(select(Host.segment, Host.name).order_by(Host.name))).all()
        names = sorted(set(methods) | {seg for seg, _ in hosts})
        return [SegmentOut(name=n, recovery_method=methods.get(n, "auto"), hosts=[h for seg, h in hosts if seg == n])
                for n in names]

    @app.put("/v1/segments/{name}")
    async def put_segment(name: Name, body: SegmentPut) -> SegmentOut:
        """A failover segment's recovery method (segments without one use `auto`)."""
        async with ctl.sessions() as s, s.begin():
            seg = await s.get(Segment, name)
            if seg is None:
                s.add(Segment(name=name, recovery_method=body.recovery_method))
            else:
                seg.recovery_method = body.recovery_method
            hosts = (await s.scalars(select(Host.name).where(Host.segment == name).order_by(Host.name))).all()
        return SegmentOut(name=name, recovery_method=body.recovery_method, hosts=list(hosts))

    async def failure_out(s, f: HostFailure) -> HostFailureOut:
        evs = (await s.scalars(select(Evacuation).where(Evacuation.failure_id == f.id)
                               .order_by(Evacuation.id))).all()
        return HostFailureOut.of(f, list(evs))

    @app.get("/v1/host-failures")
    async def list_host_failures(host: str | None = None,
                                 limit: int = Query(default=100, ge=1, le=10_000)) -> list[HostFailureOut]:
        """Host failures, newest first: detection, notification, fencing and recovery times, and
        where each instance went."""
        async with ctl.sessions() as s:
            q = select(HostFailure).order_by(HostFailure.detected_at.desc()).limit(limit)
            if host:
                q = q.where(HostFailure.host == host)
            return [await failure_out(s, f) for f in (await s.scalars(q)).all()]

    @app.get("/v1/host-failures/{failure_id}")
    async def get_host_failure(failure_id: str) -> HostFailureOut:
        async with ctl.sessions() as s:
            return await failure_out(s, await fetch(s, HostFailure, failure_id, "host failure with id"))

    @app.get("/v1/instances")
    async def list_instances() -> list[InstanceOut]:
        async with ctl.sessions() as s:
            rows = (await s.scalars(select(Instance).order_by(Instance.created_at))).all()
            return [InstanceOut.of(i) for i in rows]

    @app.post("/v1/instances", status_code=201)
    async def create_instance(body: InstanceCreate) -> InstanceOut:
        iid = await instances.create(ctl, body)
        async with ctl.sessions() as s:
            return InstanceOut.of(await get_instance(s, iid))

    @app.get("/v1/instances/{instance_id}")
    async def get_instance_(instance_id: str) -> InstanceOut:
        async with ctl.sessions() as s:
            return InstanceOut.of(await get_instance(s, instance_id))

    @app.delete("/v1/instances/{instance_id}", status_code=204)
    async def delete_instance(instance_id: str) -> Response:
        async with ctl.sessions() as s:
            inst = await get_instance(s, instance_id)
        if inst.replica_set:
            raise HTTPException(409, f"instance {inst.name} belongs to a replica set: scale the set instead")
        await instances.delete(ctl, instance_id)
        return Response(status_code=204)

    # ---- server groups ----

    async def group_out(s, group: ServerGroup) -> ServerGroupOut:
        members = (await s.scalars(select(Instance).where(Instance.server_group == group.id)
                                   .order_by(Instance.created_at))).all()
        return ServerGroupOut.of(group, list(members))

    @app.post("/v1/server-groups", status_code=201)
    async def create_server_group(body: ServerGroupCreate) -> ServerGroupOut:
        async with ctl.sessions() as s, s.begin():
            if await s.scalar(select(ServerGroup.id).where(ServerGroup.name == body.name)):
                raise HTTPException(409, f"name: a server group named '{body.name}' exists")
            group = ServerGroup(id=str(uuid.uuid4()), name=body.name, policy=body.policy, created_at=clock.now())
            s.add(group)
            return ServerGroupOut.of(group, [])

    @app.get("/v1/server-groups")
    async def list_server_groups() -> list[ServerGroupOut]:
        async with ctl.sessions() as s:
            groups = (await s.scalars(select(ServerGroup).order_by(ServerGroup.created_at))).all()
            return [await group_out(s, g) for g in groups]

    async def get_group(s, group_id: str) -> ServerGroup:
        return await fetch(s, ServerGroup, group_id, "server group with id")

    @app.get("/v1/server-groups/{group_id}")
    async def get_server_group(group_id: str) -> ServerGroupOut:
        async with ctl.sessions() as s:
            return await group_out(s, await get_group(s, group_id))

    @app.delete("/v1/server-groups/{group_id}", status_code=204)
    async def delete_server_group(group_id: str) -> Response:
        async with ctl.sessions() as s, s.begin():
            group = await get_group(s, group_id)
            members = (await s.scalars(select(Instance.name).where(Instance.server_group == group_id))).all()
            if members:
                raise HTTPException(409, f"server group {group.name} has members ({', '.join(members)}): "
                                         "delete them first")
            await s.delete(group)
        return Response(status_code=204)

    async def call_agent(host: str, cmd: Command) -> Result:
        try:
            return await ctl.hub.call(host, cmd)
        except AgentUnavailableError as exc:
            raise HTTPException(503, str(exc)) from None

    @app.post("/v1/instances/{instance_id}/actions")
    async def act(instance_id: str, body: ActionRequest) -> InstanceOut:
        if body.action == "evacuate":
            await ctl.host_recovery.evacuate_now(instance_id, body.host)
            async with ctl.sessions() as s:
                return InstanceOut.of(await get_instance(s, instance_id))
        async with ctl.sessions() as s:
            inst = await get_instance(s, instance_id)
        op = {"stop": "stop", "start": "start", "reboot": "restart"}[body.action]
        cmd = Command(id="", op=op, instance_id=instance_id, vote=not body.force, notice=body.force)
        result = await call_agent(inst.host, cmd)
        if not result.ok:
            raise HTTPException(409 if result.data.get("rejected") else 422, result.error or f"{body.action} failed")
        await ctl.inventory.update(inst.host, InstanceStatus.model_validate(result.data))
        async with ctl.sessions() as s:
            return InstanceOut.of(await get_instance(s, instance_id))

    @app.post("/v1/instances/{instance_id}/faults", status_code=202)
    async def inject_fault(instance_id: str, body: FaultInject) -> Injected:
        async with ctl.sessions() as s:
            inst = await get_instance(s, instance_id)
        if inst.state != "running":
            raise HTTPException(409, f"instance {inst.name} is {inst.state}, not running")
        result = await call_agent(inst.host, Command(id="", op="inject", instance_id=instance_id, kind=body.kind))
        if not result.ok:
            raise HTTPException(409, result.error or "injection failed")
        return Injected(instance_id=instance_id, kind=body.kind)

    @app.get("/v1/faults")
    async def list_faults(instance_id: str | None = None,
                          limit: int = Query(default=1000, ge=1, le=100_000)) -> list[FaultOut]:
        async with ctl.sessions() as s:
            q = select(Fault).order_by(Fault.detected_at.desc()).limit(limit)
            if instance_id:
                q = q.where(Fault.instance_id == instance_id)
            return [FaultOut.of(f, ctl.sla) for f in (await s.scalars(q)).all()]

    @app.get("/v1/faults/{fault_id}")
    async def get_fault(fault_id: str) -> FaultOut:
        async with ctl.sessions() as s:
            return FaultOut.of(await fetch(s, Fault, fault_id, "fault with id"), ctl.sla)

    # ---- replica sets ----

    async def replica_set_out(s, rs: ReplicaSet) -> ReplicaSetOut:
        members = (await s.scalars(select(Instance).where(Instance.replica_set == rs.id)
                                   .order_by(Instance.name))).all()
        return ReplicaSetOut.of(rs, list(members))

    async def get_replica_set(s, set_id: str) -> ReplicaSet:
        return await fetch(s, ReplicaSet, set_id, "replica set with id")

    @app.post("/v1/replica-sets", status_code=201)
    async def create_replica_set(body: ReplicaSetCreate) -> ReplicaSetOut:
        """Keep `replicas` identical instances `<name>-0`…, created, deleted and moved off failed hosts
        by a reconciler; `ready` counts those running."""
        async with ctl.sessions() as s, s.begin():
            if await s.scalar(select(ReplicaSet.id).where(ReplicaSet.name == body.name)):
                raise HTTPException(409, f"name: a replica set named '{body.name}' exists")
            if body.template.server_group and await s.get(ServerGroup, body.template.server_group) is None:
                raise HTTPException(422, f"template.server_group: no server group with id "
                                         f"{body.template.server_group}")
            rs = ReplicaSet(id=str(uuid.uuid4()), name=body.name, replicas=body.replicas,
                            template=body.template.model_dump(exclude={"name", "host"}, exclude_none=True),
                            created_at=clock.now())
            s.add(rs)
        ctl.replicas.wake()
        return ReplicaSetOut.of(rs, [])

    @app.get("/v1/replica-sets")
    async def list_replica_sets() -> list[ReplicaSetOut]:
        async with ctl.sessions() as s:
            return [await replica_set_out(s, rs) for rs in
                    (await s.scalars(select(ReplicaSet).order_by(ReplicaSet.created_at))).all()]

    @app.get("/v1/replica-sets/{set_id}")
    async def get_replica_set_(set_id: str) -> ReplicaSetOut:
        async with ctl.sessions() as s:
            return await replica_set_out(s, await get_replica_set(s, set_id))

    @app.patch("/v1/replica-sets/{set_id}")
    async def scale_replica_set(set_id: str, body: ReplicaSetUpdate) -> ReplicaSetOut:
        async with ctl.sessions() as s, s.begin():
            rs = await get_replica_set(s, set_id)
            rs.replicas = body.replicas
        ctl.replicas.wake()
        async with ctl.sessions() as s:
            return await replica_set_out(s, rs)

    @app.delete("/v1/replica-sets/{set_id}", status_code=204)
    async def delete_replica_set(set_id: str) -> Response:
        async with ctl.replicas.lock:
            async with ctl.sessions() as s:
                rs = await get_replica_set(s, set_id)
                ids = (await s.scalars(select(Instance.id).where(Instance.replica_set == rs.id))).all()
            for iid in ids:
                await instances.delete(ctl, iid)
            async with ctl.sessions() as s, s.begin():
                await s.delete(await get_replica_set(s, set_id))
        return Response(status_code=204)

    @app.get("/v1/subscriptions")
    async def list_subscriptions() -> list[SubscriptionOut]:
        async with ctl.sessions() as s:
            return [SubscriptionOut.of(x) for x in (await s.scalars(select(Subscription))).all()]

    @app.post("/v1/subscriptions", status_code=201)
    async def create_subscription(body: SubscriptionCreate) -> SubscriptionOut:
        sub = Subscription(id=str(uuid.uuid4()), url=str(body.url), secret=body.secret, created_at=clock.now())
        async with ctl.sessions() as s, s.begin():
            s.add(sub)
        ctl.notifier.subscriptions_changed()
        return SubscriptionOut.of(sub)

    @app.delete("/v1/subscriptions/{subscription_id}", status_code=204)
    async def delete_subscription(subscription_id: str) -> Response:
        async with ctl.sessions() as s, s.begin():
            await s.delete(await fetch(s, Subscription, subscription_id, "subscription with id"))
        ctl.notifier.subscriptions_changed()
        return Response(status_code=204)

    @app.get("/v1/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}})
    async def stream_events() -> StreamingResponse:
        """Live fault events as server-sent events, the same envelopes the webhooks get."""
        q = ctl.live.listen()

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b": nfvha event stream\n\n"
                while ctl.live.listening(q):
                    try:
                        async with asyncio.timeout(15.0):
                            ev = await q.get()
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    yield f"id: {ev.id}\nevent: {ev.type}\ndata: {ev.body}\n\n".encode()
            finally:
                ctl.live.leave(q)

        return StreamingResponse(gen(), media_type="text/event-stream")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(ctl.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/v1/agent")
    async def agent_session(ws: WebSocket) -> None:
        await ctl.hub.serve(ws)

    return app
