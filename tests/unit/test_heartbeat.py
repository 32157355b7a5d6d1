import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nfvha.wire import heartbeat as hb
from nfvha.wire.framing import ProtocolError

INIT = hb.Init(invocation_id="a", name="vnf", heartbeat_interval_ms=100)


def registered(threshold: int = 2) -> tuple[hb.HostHeartbeat, int]:
    host = hb.HostHeartbeat(miss_threshold=threshold, rng=random.Random(1))
    step = host.receive(INIT, 0.0)
    assert isinstance(step.send[0], hb.InitAck) and isinstance(step.send[1], hb.Challenge)
    return host, step.send[1].heartbeat_challenge


def answer(host, value, t, health="healthy", action="reboot"):
    return host.receive(hb.ChallengeResponse(value, health, action), t)


def kinds(step):
    return [type(e).__name__ for e in step.events]


def test_init_is_acked_with_the_effective_interval_and_challenged_at_once():
    host = hb.HostHeartbeat(min_interval_ms=200)
    step = host.receive(INIT, 5.0)
    assert step.send[0] == hb.InitAck("a", 200)
    assert kinds(step) == ["Registered"]
    assert host.next_deadline() == 5.2


def test_first_healthy_answer_reports_healthy_once():
    host, c = registered()
    assert kinds(answer(host, c, 0.01)) == ["Healthy"]
    c2 = host.tick(0.1).send[0].heartbeat_challenge
    assert kinds(answer(host, c2, 0.11)) == []


def test_two_missed_challenges_raise_heartbeat_timeout_within_three_intervals():
    host, c = registered()
    answer(host, c, 0.01)
    assert kinds(host.tick(host.next_deadline())) == []  # challenge 2 sent at 0.1; the guest hangs now
    assert kinds(host.tick(host.next_deadline())) == []  # miss 1 at 0.2
    step = host.tick(host.next_deadline())  # miss 2 at 0.3
    assert kinds(step) == ["Fault"]
    assert step.events[0].reason == "heartbeat_timeout" and step.events[0].last_ok_at == 0.01
    assert abs(host.next_deadline() - 0.4) < 1e-9


def test_an_answer_resets_the_miss_count():
    host, _ = registered()
    host.tick(0.1)  # miss 1 (the first challenge went unanswered)
    assert host.misses == 1 and host.tick(0.15).send == []  # not due again yet
    c = host.tick(host.next_deadline()).send[0].heartbeat_challenge  # miss 2 -> fault
    assert host.state == "faulted"
    assert kinds(answer(host, c, 0.21)) == ["Healthy"] and host.state == "heartbeating"


def test_a_wrong_answer_counts_as_a_miss():
    host, c = registered()
    answer(host, c ^ 1, 0.01)
    assert host.wrong_answers == 1
    host.tick(0.1)
    assert host.misses == 1


def test_unhealthy_answer_is_a_fault_at_once_with_the_guests_corrective_action():
    host, c = registered()
    step = answer(host, c, 0.01, "unhealthy", "stop")
    assert kinds(step) == ["Fault"]
    assert step.events[0].reason == "unhealthy" and step.events[0].corrective_action == "stop"
    c2 = host.tick(0.1).send[0].heartbeat_challenge
    assert kinds(answer(host, c2, 0.11, "unhealthy")) == []  # still the same fault
    c3 = host.tick(0.2).send[0].heartbeat_challenge
    assert kinds(answer(host, c3, 0.21)) == ["Healthy"]


def test_new_invocation_id_means_the_guest_daemon_restarted_and_is_no_fault():
    host, _ = registered()
    step = host.receive(hb.Init(invocation_id="b", name="vnf", heartbeat_interval_ms=100), 0.05)
    assert kinds(step) == ["Registered"] and step.events[0].reinit


def test_repeated_init_with_the_same_invocation_is_acked_without_reset():
    host, c = registered()
    answer(host, c, 0.01)
    step = host.receive(INIT, 0.02)
    assert [type(m) for m in step.send] == [hb.InitAck] and step.events == []


def test_exit_stops_heartbeating_and_closing_after_it_is_no_fault():
    host, _ = registered()
    assert kinds(host.receive(hb.Exit("bye"), 0.01)) == ["Exited"]
    assert host.next_deadline() is None
    assert kinds(host.closed(0.02)) == []


def test_channel_closed_while_heartbeating_is_channel_lost_unless_a_stop_is_expected():
    host, _ = registered()
    assert host.closed(0.01).events[0].reason == "channel_lost"
    host, _ = registered()
    host.expecting_stop = True
    assert kinds(host.closed(0.01)) == []


def test_a_guest_that_never_sends_init_is_never_faulted():
    host = hb.HostHeartbeat()
    assert host.next_deadline() is None
    assert kinds(host.tick(100.0)) == [] and kinds(host.closed(100.0)) == []


def test_a_response_before_registration_is_a_protocol_error():
    host = hb.HostHeartbeat()
    try:
        host.receive(hb.ChallengeResponse(1, "healthy"), 0.0)
    except ProtocolError as err:
        assert err.reason == "unexpected"
    else:
        raise AssertionError


def test_message_fields_are_validated_against_the_table():
    def reason(data, sender="guest"):
        try:
            hb.parse(data, sender)
        except ProtocolError as err:
            return err.reason
        return "ok"

    init = hb.to_data(INIT)
    assert reason(init) == "ok"
    assert reason({**init, "name": "x" * 65}) == "bad_field"
    assert reason({**init, "heartbeat_interval_ms": "100"}) == "bad_field"
    assert reason({**init, "heartbeat_interval_ms": 0}) == "bad_field"
    assert reason({**init, "corrective_action": "explode"}) == "bad_field"
    assert reason({k: v for k, v in init.items() if k != "name"}) == "missing_field"
    assert reason({"msg_type": "dance"}) == "unknown_msg_type"
    assert reason({"msg_type": "challenge", "heartbeat_challenge": 5}) == "wrong_direction"
    assert reason({"msg_type": "challenge_response", "heartbeat_response": 2**32,
                   "heartbeat_health": "healthy"}) == "bad_field"
    assert reason({"msg_type": "challenge", "heartbeat_challenge": 5}, "host") == "ok"


def test_guest_resends_init_until_acked_then_answers_challenges():
    guest = hb.GuestHeartbeat(INIT, init_retry=0.5)
    assert guest.connected(0.0).send == [INIT]
    assert guest.tick(0.4).send == []
    assert guest.tick(0.5).send == [INIT]
    guest.receive(hb.InitAck("a", 100), 0.6)
    assert guest.state == "registered" and guest.tick(0.7).send == []
    step = guest.receive(hb.Challenge(42), 0.7)
    assert step.events == [hb.ChallengeReceived(42)]
    assert guest.respond(42, False, "disk full").send[0] == hb.ChallengeResponse(42, "unhealthy", "reboot", "disk full")


def test_guest_reregisters_when_the_host_goes_quiet():
    guest = hb.GuestHeartbeat(INIT)
    guest.connected(0.0)
    guest.receive(hb.InitAck("a", 100), 0.0)
    assert guest.next_deadline() == 1.0  # at least 1 s of silence, or 3 intervals
    assert guest.tick(1.0).send == [INIT] and guest.state == "registering"


def test_an_ack_for_another_invocation_is_ignored():
    guest = hb.GuestHeartbeat(INIT)
    guest.connected(0.0)
    guest.receive(hb.InitAck("other", 100), 0.1)
    assert guest.state == "registering"


def test_a_prompt_guest_is_never_faulted_over_a_long_run():
    host = hb.HostHeartbeat(rng=random.Random(7))
    guest = hb.GuestHeartbeat(INIT)
    inbox = guest.connected(0.0).send
    t, faults = 0.0, 0
    for _ in range(5000):
        for msg in inbox:
            faults += sum(isinstance(e, hb.Fault) for e in host.receive(msg, t).events)
        inbox = []
        t = host.next_deadline() or t + 0.1
        step = host.tick(t)
        faults += sum(isinstance(e, hb.Fault) for e in step.events)
        for msg in step.send:
            for ev in guest.receive(msg, t + 0.001).events:
                inbox += guest.respond(ev.value, True).send
    assert faults == 0


guest_msgs = st.one_of(
    st.builds(hb.Init, st.sampled_from(["a", "b"]), st.just("vnf"), st.integers(1, 500),
              st.sampled_from(hb.CORRECTIVE_ACTIONS)),
    st.builds(hb.ChallengeResponse, st.integers(0, 2**32 - 1), st.sampled_from(["healthy", "unhealthy"])),
    st.builds(hb.Exit, st.text(max_size=5)),
    st.just("answer-correctly"), st.just("tick"), st.just("close"),
)


@settings(max_examples=300)
@given(st.lists(guest_msgs, max_size=60), st.integers(1, 3))
def test_host_machine_under_any_message_order(msgs, threshold):
    """Only ProtocolError escapes; faults come one at a time, each cleared before the next
    (a guest that keeps failing is one fault until it is healthy again)."""
    host = hb.HostHeartbeat(miss_threshold=threshold, rng=random.Random(3))
    t, open_fault = 0.0, False
    for m in msgs:
        t += 0.05
        try:
            if m == "tick":
                step = host.tick(host.next_deadline() or t)
            elif m == "close":
                step = host.closed(t)
            elif m == "answer-correctly":
                step = host.receive(hb.ChallengeResponse(host._outstanding or 0, "healthy"), t)
            else:
                step = host.receive(m, t)
        except ProtocolError:
            continue
        for ev in step.events:
            if isinstance(ev, hb.Fault):
                assert not open_fault
                open_fault = True
            elif isinstance(ev, (hb.Healthy, hb.Registered, hb.Exited)):
                open_fault = False
        if host.state == "closed":
            break
