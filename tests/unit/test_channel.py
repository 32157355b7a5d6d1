import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.wire import heartbeat as hb
from nfvha.wire import server_group as sgm
from nfvha.wire.channel import GuestChannel, HostChannel
from nfvha.wire.framing import Frame, encode
from nfvha.wire.ratelimit import TokenBucket

INIT = hb.Init(invocation_id="a", name="vnf", heartbeat_interval_ms=100)


def frames(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.split(b"\n") if x.strip()]


def test_host_and_guest_channels_register_and_heartbeat_over_bytes():
    host, guest = HostChannel(), GuestChannel(INIT)
    out = host.receive_data(guest.connected(0.0).data, 0.0)
    assert [f["data"]["msg_type"] for f in frames(out.data)] == ["init_ack", "challenge"]
    assert [f["seq"] for f in frames(out.data)] == [1, 2]
    g = guest.receive_data(out.data, 0.001)
    [ev] = g.events
    reply = host.receive_data(guest.respond(ev.value, True).data, 0.002)
    assert [type(e) for e in reply.events] == [hb.Healthy]
    assert host.errors == {} and guest.errors == {}


def test_garbage_is_counted_by_reason_and_nothing_else_happens():
    host = HostChannel()
    out = host.receive_data(b"garbage\n[1]\n" + b"x" * 9000 + b"\n{\"version\":1}\n", 0.0)
    assert out.data == b"" and out.events == []
    assert host.errors == {"bad_json": 1, "not_object": 1, "too_long": 1, "missing_field": 1}


def test_unknown_message_type_is_nacked_and_counted():
    host = HostChannel()
    out = host.receive_data(encode(Frame("heartbeat", {"msg_type": "dance"})), 0.0)
    [nack] = frames(out.data)
    assert nack["app"] == "heartbeat" and nack["data"]["msg_type"] == "nack"
    assert nack["data"]["orig_msg_type"] == "dance"
    assert host.errors == {"unknown_msg_type": 1}


def sg(data: dict) -> bytes:
    return encode(Frame("server_group", data))


def test_server_group_messages_from_the_guest_become_events():
    host = HostChannel()
    out = host.receive_data(sg({"msg_type": "broadcast", "data": "héllo"}) + sg({"msg_type": "status_query",
                                                                                 "seq": 7}), 0.0)
    assert out.events == [sgm.Broadcast("héllo"), sgm.StatusQuery(7)] and out.data == b""
    assert host.errors == {}


def test_server_group_bad_input_is_refused_counted_and_nacked_where_the_spec_says():
    host = HostChannel()
    cases = [
        ({"msg_type": "broadcast", "data": "é" * 1526}, "oversized"),  # 3052 bytes in UTF-8, 1526 characters
        ({"msg_type": "broadcast", "data": "x", "source_instance": "someone-else"}, "forged_source"),
        ({"msg_type": "broadcast", "data": 5}, "bad_field"),
        ({"msg_type": "broadcast"}, "missing_field"),
        ({"msg_type": "status_response", "seq": 1, "instance": {}}, "wrong_direction"),
        ({"msg_type": "teleport"}, "unknown_msg_type"),
        ({"msg_type": "status_query", "seq": -1}, "bad_field"),
    ]
    for data, reason in cases:
        before = host.errors[reason]
        out = host.receive_data(sg(data), 0.0)
        assert out.events == [] and host.errors[reason] == before + 1, (data, host.errors)
        if reason in ("oversized", "forged_source", "unknown_msg_type"):
            [nack] = frames(out.data)
            assert nack["app"] == "server_group" and nack["data"]["msg_type"] == "nack"
    out = host.receive_data(sg({"msg_type": "broadcast", "data": "é" * 1525}), 0.0)  # 3050 bytes: fits
    assert len(out.events) == 1


def test_a_broadcast_flood_is_limited_without_touching_the_heartbeat():
    host, guest = HostChannel(sg_rate=20, sg_burst=40), GuestChannel(INIT)
    out = host.receive_data(guest.connected(0.0).data, 0.0)
    [challenge] = guest.receive_data(out.data, 0.0).events
    flood = b"".join(sg({"msg_type": "broadcast", "data": f"m{k}"}) for k in range(100))
    out = host.receive_data(flood + guest.respond(challenge.value, True).data, 0.01)
    assert sum(isinstance(e, sgm.Broadcast) for e in out.events) == 40
    assert host.errors == {"sg_rate_limited": 60}
    assert [type(e) for e in out.events if not isinstance(e, sgm.Broadcast)] == [hb.Healthy]


def test_the_guest_end_reads_what_the_platform_delivers():
    host, guest = HostChannel(), GuestChannel(INIT)
    member = {"id": "i2", "name": "b", "state": "running", "host": "h1", "updated_at": None}
    out = host.send(sgm.BroadcastDelivery("hi", "i2"), sgm.StatusResponse(3, member), sgm.StatusResponseDone(3),
                    sgm.Notification(member, "2026-11-25T12:00:00Z"))
    events = guest.receive_data(out.data, 0.0).events
    assert events == [sgm.BroadcastDelivery("hi", "i2"), sgm.StatusResponse(3, member), sgm.StatusResponseDone(3),
                      sgm.Notification(member, "2026-11-25T12:00:00Z")]
    # a guest's own messages go out in app server_group
    assert [f["app"] for f in frames(guest.send(sgm.Broadcast("x"), sgm.StatusQuery(1)).data)] == \
        ["server_group", "server_group"]


def test_a_heartbeat_flood_is_rate_limited():
    host = HostChannel(rate=100, burst=10)
    flood = b"".join(encode(Frame("heartbeat", {"msg_type": "nack"})) for _ in range(1000))
    host.receive_data(flood, 0.0)
    assert host.errors["rate_limited"] == 990 and host.frames_in == 10
    host.receive_data(encode(Frame("heartbeat", {"msg_type": "nack"})), 0.05)  # 5 tokens back
    assert host.frames_in == 11


def test_a_flood_of_anything_is_limited_before_parsing():
    host = HostChannel(frame_rate=100, frame_burst=10)
    host.receive_data(b"".join(encode(Frame("chess", {"msg_type": "move"})) for _ in range(1000)), 0.0)
    assert host.errors == {"frame_rate_limited": 990, "unknown_app": 10}


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    b = TokenBucket(rate=10, burst=2)
    assert [b.allow(0.0) for _ in range(3)] == [True, True, False]
    assert b.allow(0.1) and not b.allow(0.1)
    assert b.allow(100.0) and b.allow(100.0) and not b.allow(100.0)


valid_frames = st.sampled_from([
    encode(Frame("heartbeat", hb.to_data(INIT))),
    encode(Frame("heartbeat", {"msg_type": "challenge_response", "heartbeat_response": 7,
                               "heartbeat_health": "healthy"})),
    encode(Frame("heartbeat", {"msg_type": "exit"})),
])


@settings(max_examples=300)
@given(st.lists(st.one_of(st.binary(max_size=300), valid_frames, st.floats(0, 0.5)), max_size=40))
def test_any_byte_stream_only_counts_errors_and_never_raises(items):
    """Garbage interleaved with valid frames and clock ticks: the channel never raises, and
    only a registered guest that then fails to answer can be faulted."""
    host, now, registered = HostChannel(), 0.0, False
    for item in items:
        if isinstance(item, float):
            now += item
            out = host.tick(now)
        else:
            out = host.receive_data(item, now)
        registered = registered or any(isinstance(e, hb.Registered) for e in out.events)
        if any(isinstance(e, hb.Fault) for e in out.events):
            assert registered
