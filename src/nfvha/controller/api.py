"""The REST API under /v1 (OpenAPI at /openapi.json, docs at /docs)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from .. import __version__, clock
from ..control import Command, InstanceStatus, Result
from ..store.models import Fault, Host, Instance, ServerGroup, Subscription
from .agents import AgentUnavailableError
from .groups import peer_view
from .inventory import spec
from .placement import PlacementError, choose_host
from .schemas import (
    ActionRequest,
    FaultInject,
    FaultOut,
    HostOut,
    Injected,
    InstanceCreate,
    InstanceOut,
    ServerGroupCreate,
    ServerGroupOut,
    SubscriptionCreate,
    SubscriptionOut,
)

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

    async def get_instance(s, instance_id: str) -> Instance:
        inst = await s.get(Instance, instance_id)
        if inst is None:
            raise HTTPException(404, f"no instance with id {instance_id}")
        return inst

    @app.get("/v1/hosts")
    async def list_hosts() -> list[HostOut]:
        async with ctl.sessions() as s:
            return [HostOut.of(h) for h in (await s.scalars(select(Host).order_by(Host.name))).all()]

    @app.get("/v1/instances")
    async def list_instances() -> list[InstanceOut]:
        async with ctl.sessions() as s:
            rows = (await s.scalars(select(Instance).order_by(Instance.created_at))).all()
            return [InstanceOut.of(i) for i in rows]

    async def place(s, body: InstanceCreate) -> str:
        """The host for a new instance: named, or chosen under its server group's policy."""
        policy, member_hosts = None, []
        if body.server_group is not None:
            group = await s.get(ServerGroup, body.server_group)
            if group is None:
                raise HTTPException(422, f"server_group: no server group with id {body.server_group}")
            policy = group.policy
            member_hosts = list((await s.scalars(select(Instance.host).where(
                Instance.server_group == group.id))).all())
        try:
            return choose_host(ctl.hub.hosts(), member_hosts, policy, body.host)
        except PlacementError as exc:
            status = 503 if not ctl.hub.hosts() else 422 if str(exc).startswith("host:") else 409
            raise HTTPException(status, str(exc)) from None

    @app.post("/v1/instances", status_code=201)
    async def create_instance(body: InstanceCreate) -> InstanceOut:
        now = clock.now()
        # one placement at a time: two members of an anti-affinity group must not both take a host
        async with ctl.placement_lock, ctl.sessions() as s, s.begin():
            if await s.scalar(select(Instance.id).where(Instance.name == body.name)):
                raise HTTPException(409, f"name: an instance named '{body.name}' exists")
            host = await place(s, body)
            inst = Instance(id=str(uuid.uuid4()), name=body.name, host=host, command=body.command or [],
                            vm=body.vm.model_dump(exclude_none=True) if body.vm else None,
                            server_group=body.server_group, heartbeat=body.heartbeat, recovery=body.recovery,
                            state="creating", heartbeat_status="disabled", protocol_errors={}, created_at=now,
                            updated_at=now)
            s.add(inst)
        ctl.groups.invalidate()
        try:
            result = await ctl.hub.call(host, Command(id="", op="ensure", instance_id=inst.id, spec=spec(inst)))
            failure = None if result.ok else HTTPException(422, f"command: {result.error}")
        except AgentUnavailableError as exc:
            failure = HTTPException(503, str(exc))
        if failure is not None:  # the request changes nothing
            async with ctl.sessions() as s, s.begin():
                await s.delete(await s.get(Instance, inst.id))
            ctl.groups.invalidate()
            raise failure
        await ctl.inventory.update(host, InstanceStatus.model_validate(result.data))
        async with ctl.sessions() as s:
            return InstanceOut.of(await get_instance(s, inst.id))

    @app.get("/v1/instances/{instance_id}")
    async def get_instance_(instance_id: str) -> InstanceOut:
        async with ctl.sessions() as s:
            return InstanceOut.of(await get_instance(s, instance_id))

    @app.delete("/v1/instances/{instance_id}", status_code=204)
    async def delete_instance(instance_id: str) -> Response:
        async with ctl.sessions() as s:
            inst = await get_instance(s, instance_id)
        try:
            await ctl.hub.call(inst.host, Command(id="", op="remove", instance_id=instance_id))
        except AgentUnavailableError:
            pass  # its agent drops it when it next connects: the welcome no longer lists it
        async with ctl.sessions() as s, s.begin():
            inst = await s.get(Instance, instance_id)
            if inst is not None:
                await s.delete(inst)
        ctl.groups.invalidate()
        if inst is not None and inst.server_group:
            await ctl.groups.notify(peer_view(inst, "deleted"), inst.server_group)
        ctl.metrics.forget_instance(instance_id)
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
        group = await s.get(ServerGroup, group_id)
        if group is None:
            raise HTTPException(404, f"no server group with id {group_id}")
        return group

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
            f = await s.get(Fault, fault_id)
            if f is None:
                raise HTTPException(404, f"no fault with id {fault_id}")
            return FaultOut.of(f, ctl.sla)

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
            sub = await s.get(Subscription, subscription_id)
            if sub is None:
                raise HTTPException(404, f"no subscription with id {subscription_id}")
            await s.delete(sub)
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
