"""Engine and sessions. SQLite is the embedded default."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, event, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from .models import Base


async def open_store(path: Path) -> tuple[AsyncEngine, async_sessionmaker]:
    # One connection: SQLite has one writer, and a read transaction that upgrades to a write
    # fails at once with "database is locked" instead of waiting; serialising avoids both.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(conn, _record) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL keeps it consistent
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        missing = await conn.run_sync(_missing_columns)
    if missing:
        await engine.dispose()
        raise StoreError(f"the store {path} was made by an older nfvha: it lacks {', '.join(missing)}. Move it "
                         "aside to start afresh (schema migrations come with the PostgreSQL store)")
    return engine, async_sessionmaker(engine, expire_on_commit=False)


class StoreError(Exception):
    pass


def _missing_columns(conn: Connection) -> list[str]:
    """create_all adds missing tables, never missing columns: name those an older store lacks."""
    have = inspect(conn)
    return [f"{table.name}.{col.name}" for table in Base.metadata.sorted_tables
            for col in table.columns if col.name not in {c["name"] for c in have.get_columns(table.name)}]
