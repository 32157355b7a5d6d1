"""A server-group member that attacks the group channel while it heartbeats properly:
an oversized broadcast, a forged source_instance, bad fields, a wrong direction, then a
broadcast flood at 1,000 per second for 3 seconds, then one well-formed broadcast "last";
and a vote answer nobody asked for."""

import asyncio
import json
import sys

from nfvha.hatest import simguest


def frame(data: object) -> bytes:
    return b"\n" + json.dumps({"version": 1, "app": "server_group", "seq": 1, "data": data}).encode() + b"\n"


async def attack(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(1.0)  # registered and heartbeating by then
    for data in ({"msg_type": "broadcast", "data": "x" * 3051},
                 {"msg_type": "broadcast", "data": "forged", "source_instance": "someone-else"},
                 {"msg_type": "broadcast", "data": 42},
                 {"msg_type": "status_response", "seq": 1, "instance": {"id": "x"}},
                 {"msg_type": "status_query", "seq": "one"}):
        writer.write(frame(data))
    # a vote nobody asked for
    writer.write(b"\n" + json.dumps({"version": 1, "app": "heartbeat", "seq": 2, "data": {
        "msg_type": "action_response", "invocation_id": "not-asked", "event_type": "stop",
        "notification_type": "revocable", "vote_result": "reject"}}).encode() + b"\n")
    loop = asyncio.get_running_loop()
    end, k = loop.time() + 3.0, 0
    while loop.time() < end:  # 10 every 10 ms
        writer.write(b"".join(frame({"msg_type": "broadcast", "data": f"flood {k + i}"}) for i in range(10)))
        k += 10
        await asyncio.sleep(0.01)
    await asyncio.sleep(2.5)  # the limiter's bucket refills
    writer.write(frame({"msg_type": "broadcast", "data": "last"}))


async def main(path: str) -> None:
    done = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(attack(writer))
        try:
            await simguest.serve(reader, writer, "hostile-member", 100)
        finally:
            task.cancel()
            done.set()

    server = await asyncio.start_unix_server(on_conn, path)
    async with server:
        await done.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
