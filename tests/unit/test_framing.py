import json

from hypothesis import given
from hypothesis import strategies as st

from nfvha.wire.framing import MAX_LINE, Frame, FrameWriter, LineDecoder, ProtocolError, encode, parse_frame


def frame_line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_encoded_frame_round_trips_and_is_newline_delimited_on_both_sides():
    data = encode(Frame(app="heartbeat", data={"msg_type": "exit", "log_msg": "bye\nnow"}, seq=3))
    assert data.startswith(b"\n") and data.endswith(b"\n") and data.count(b"\n") == 2
    lines = LineDecoder().feed(data)
    assert parse_frame(lines[0]) == Frame(app="heartbeat", data={"msg_type": "exit", "log_msg": "bye\nnow"}, seq=3)


def test_leading_newline_discards_a_half_written_frame_of_an_earlier_incarnation():
    dec = LineDecoder()
    items = dec.feed(b'{"version":1,"app":"heart') + dec.feed(encode(Frame("heartbeat", {"msg_type": "exit"})))
    assert isinstance(items[0], bytes)
    errors = []
    frames = []
    for item in items:
        try:
            frames.append(parse_frame(item))
        except ProtocolError as err:
            errors.append(err.reason)
    assert errors == ["bad_json"] and frames[0].msg_type == "exit"


def test_a_1mb_line_is_dropped_once_with_bounded_memory_and_the_next_frame_survives():
    dec = LineDecoder()
    out = []
    for _ in range(128):
        out += dec.feed(b"x" * 8192)
        assert len(dec._tail) <= MAX_LINE
    out += dec.feed(b"\n" + encode(Frame("heartbeat", {"msg_type": "exit"})))
    assert [type(x) for x in out] == [ProtocolError, bytes]
    assert out[0].reason == "too_long"


def test_line_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not():
    dec = LineDecoder()
    assert dec.feed(b"a" * MAX_LINE + b"\n") == [b"a" * MAX_LINE]
    [err] = dec.feed(b"a" * (MAX_LINE + 1) + b"\n")
    assert isinstance(err, ProtocolError) and err.reason == "too_long"


def test_empty_lines_are_skipped():
    assert LineDecoder().feed(b"\n\n  \n") == []


def reason_of(line: bytes) -> str:
    try:
        parse_frame(line)
    except ProtocolError as err:
        return err.reason
    return "ok"


def test_base_layer_errors_are_named():
    good = {"version": 1, "app": "heartbeat", "seq": 1, "data": {"msg_type": "exit"}}
    assert reason_of(frame_line(good)) == "ok"
    assert reason_of(b"not json") == "bad_json"
    assert reason_of(b"\xff\xfe") == "bad_json"
    assert reason_of(b"[1,2]") == "not_object"
    assert reason_of(frame_line({k: v for k, v in good.items() if k != "seq"})) == "missing_field"
    assert reason_of(frame_line({**good, "seq": "1"})) == "bad_field"
    assert reason_of(frame_line({**good, "version": True})) == "bad_field"
    assert reason_of(frame_line({**good, "data": {}})) == "missing_field"


def test_unknown_version_and_app_are_nacked():
    good = {"version": 1, "app": "heartbeat", "seq": 1, "data": {"msg_type": "exit"}}
    for bad, reason in (({**good, "version": 2}, "bad_version"), ({**good, "app": "chess"}, "unknown_app")):
        try:
            parse_frame(frame_line(bad))
        except ProtocolError as err:
            assert err.reason == reason and err.nack
            nack = json.loads(FrameWriter().nack(err))
            assert nack["data"]["msg_type"] == "nack" and nack["data"]["orig_msg_type"] == "exit"
        else:
            raise AssertionError("accepted")


frames = st.builds(lambda t, s: Frame("heartbeat", {"msg_type": t}, seq=s),
                   st.sampled_from(["init", "exit", "challenge"]), st.integers(0, 2**31))


@given(st.lists(frames, max_size=20), st.lists(st.integers(1, 50), min_size=1, max_size=50))
def test_decoding_does_not_depend_on_where_the_stream_is_cut(fs, cuts):
    stream = b"".join(encode(f) for f in fs)
    dec, out, pos, i = LineDecoder(), [], 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        out += dec.feed(stream[pos:pos + n])
        pos, i = pos + n, i + 1
    assert [parse_frame(x) for x in out] == fs


@given(st.lists(st.binary(max_size=20000), max_size=10))
def test_arbitrary_bytes_never_crash_the_decoder_and_never_grow_its_buffer(chunks):
    dec = LineDecoder()
    for chunk in chunks:
        for item in dec.feed(chunk):
            if isinstance(item, bytes):
                assert len(item) <= MAX_LINE
                reason_of(item)  # raises only ProtocolError
        assert len(dec._tail) <= MAX_LINE
