"""Engine, sessions and schema migrations (Alembic). SQLite is the embedded default;
PostgreSQL (`postgresql+asyncpg://…`) is the store several controllers share.

A leader's sessions are fenced: every transaction first checks, in the store, that the
leadership token it holds is still the current one (`fence_sessions`), so that a controller
deposed while it was busy cannot write after its successor has taken over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from .. import clock
from .models import Leadership

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 74700  # a PostgreSQL advisory lock: one controller migrates at a time


class StoreError(Exception):
    pass


class FencedError(StoreError):
    """This controller's leadership token is no longer the store's: it must stop acting."""


def store_url(store: str | None, state_dir: Path) -> str:
    return store or f"sqlite+aiosqlite:///{state_dir / 'nfvha.db'}"


async def open_store(url: str) -> tuple[AsyncEngine, async_sessionmaker]:
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer, and a read transaction that upgrades to a write
        # fails at once with "database is locked" instead of waiting; serialising avoids both.
        engine = create_async_engine(url, pool_size=1, max_overflow=0)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(conn, _record) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL keeps it consistent
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    elif url.startswith("postgresql+asyncpg://"):
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    else:
        raise StoreError(f"--store must be a postgresql+asyncpg:// URL (or none, for SQLite): got {url.split(':')[0]}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
    except StoreError:
        await engine.dispose()
        raise
    except OSError as exc:
        await engine.dispose()
        raise StoreError(f"cannot reach the store: {exc}") from None
    # a session class of this store's own, so that fencing its transactions touches no other store
    own = type("StoreSession", (Session,), {})
    return engine, async_sessionmaker(engine, expire_on_commit=False, sync_session_class=own)


def migrate(conn: Connection) -> None:
    """Bring the schema to the newest revision."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    tables = set(inspect(conn).get_table_names())
    if tables and "alembic_version" not in tables:
        url = conn.engine.url
        where = url.database if url.get_backend_name() == "sqlite" else url.render_as_string()  # no password
        raise StoreError(f"the store {where} was made by an older nfvha, before schema migrations: move it "
                         "aside to start afresh")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def claim(sessions: async_sessionmaker, token: int, holder: str) -> None:
    """Make `token` the store's leadership token; FencedError if a newer one holds it."""
    async with sessions(info={"claim": True}) as s, s.begin():  # the one transaction not fenced
        row = await s.scalar(select(Leadership).where(Leadership.id == 1).with_for_update())
        if row is None:
            s.add(Leadership(id=1, token=token, holder=holder, since=clock.now()))
        elif row.token > token:
            raise FencedError(f"leadership token {token} is older than the store's {row.token} ({row.holder})")
        else:
            row.token, row.holder, row.since = token, holder, clock.now()


def fence_sessions(sessions: async_sessionmaker, token: Callable[[], int | None]) -> None:
    """Every transaction of `sessions` first checks that `token()` (when not None) is still the
    store's; FOR SHARE makes a successor's claim wait for it, and it for the claim."""

    @event.listens_for(sessions.kw["sync_session_class"], "after_begin")
    def _check(session: Session, _transaction, connection: Connection) -> None:
        mine = token()
        if mine is None or session.info.get("claim") or connection.dialect.name != "postgresql":
            return  # a follower only reads; SQLite has one controller
        current = connection.execute(text("SELECT token FROM leadership WHERE id = 1 FOR SHARE")).scalar()
        if current != mine:
            raise FencedError(f"leadership token {mine} was superseded by {current}: this controller no longer leads")
