"""Run a server's main coroutine so that a stop always ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

log = logging.getLogger("nfvha")


def run_bounded(main: Coroutine[object, object, None], grace: float = 2.0) -> None:
    """Like `asyncio.run`, except that the tasks still pending once `main` ends get `grace`
    seconds after their cancellation, not forever.

    asyncio.run waits for every leftover task. A library's own task can outlive its
    cancellation: SQLAlchemy closes a connection cancelled mid-query in a shielded task, which
    under aiosqlite 0.22 can await its worker thread after that thread has ended. A stopping
    controller must not hang on it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                _, stuck = loop.run_until_complete(asyncio.wait(leftover, timeout=grace))
                for task in stuck:
                    log.warning("left behind at exit, still running after its cancellation: %r", task.get_coro())
                    task._log_destroy_pending = False  # said once, above, not again as an asyncio error
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_default_executor())], timeout=grace))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
