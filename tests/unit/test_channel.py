import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.wire import heartbeat as hb
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


def test_server_group_frames_are_not_served_yet_and_counted():
    host = HostChannel()
    host.receive_data(encode(Frame("server_group", {"msg_type": "broadcast", "data": "x"})), 0.0)
    assert host.errors == {"unsupported_app": 1}


def test_a_flood_is_rate_limited_before_parsing():
    host = HostChannel(rate=100, burst=10)
    flood = b"".join(encode(Frame("heartbeat", {"msg_type": "nack"})) for _ in range(1000))
    host.receive_data(flood, 0.0)
    assert host.errors["rate_limited"] == 990 and host.frames_in == 10
    host.receive_data(encode(Frame("heartbeat", {"msg_type": "nack"})), 0.05)  # 5 tokens back
    assert host.frames_in == 11


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
