"""Many simulated guests in one process, each serving its own channel socket (for bench/scale.py).

    python bench/sim_guests.py INTERVAL_MS PATH...

Each guest registers with the given interval and answers every challenge at once, healthy.
"""

from __future__ import annotations

import asyncio
import functools
import resource
import sys

from nfvha.hatest.simguest import serve


async def main(interval_ms: int, paths: list[str]) -> None:
    servers = [await asyncio.start_unix_server(functools.partial(serve, name=f"sim-{k}", interval_ms=interval_ms),
                                               path) for k, path in enumerate(paths)]
    print(f"serving {len(servers)} guests", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
