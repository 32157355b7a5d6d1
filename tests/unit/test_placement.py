"""Server-group placement: pure logic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfvha.controller.placement import POLICIES, PlacementError, choose_host


def test_no_group_takes_the_first_host_and_a_named_one_must_be_connected():
    assert choose_host(["h2", "h1"], []) == "h1"
    assert choose_host(["h1", "h2"], [], requested="h2") == "h2"
    with pytest.raises(PlacementError, match="no agent is connected for host 'h9'"):
        choose_host(["h1"], [], requested="h9")
    with pytest.raises(PlacementError, match="no agent is connected"):
        choose_host([], [])


def test_anti_affinity_spreads_and_refuses_when_every_host_is_taken():
    assert choose_host(["h1", "h2"], ["h1"], "anti-affinity") == "h2"
    with pytest.raises(PlacementError, match="anti-affinity"):
        choose_host(["h1", "h2"], ["h1", "h2"], "anti-affinity")
    with pytest.raises(PlacementError, match="anti-affinity and a member runs on 'h1'"):
        choose_host(["h1", "h2"], ["h1"], "anti-affinity", requested="h1")
    # the soft variant falls back to the host with the fewest members
    assert choose_host(["h1", "h2"], ["h1", "h1", "h2"], "soft-anti-affinity") == "h2"


def test_affinity_follows_the_members_and_refuses_another_host():
    assert choose_host(["h1", "h2"], ["h2"], "affinity") == "h2"
    assert choose_host(["h1", "h2"], [], "affinity") == "h1"
    with pytest.raises(PlacementError, match="affinity and its members run on h2"):
        choose_host(["h1", "h2"], ["h2"], "affinity", requested="h1")
    with pytest.raises(PlacementError, match="host 'h3' has no agent connected"):
        choose_host(["h1", "h2"], ["h3"], "affinity")
    assert choose_host(["h1", "h2"], ["h3"], "soft-affinity") == "h1"


hosts = st.lists(st.sampled_from(["h1", "h2", "h3", "h4"]), min_size=1, unique=True)


@given(connected=hosts, members=st.lists(st.sampled_from(["h1", "h2", "h3", "h4", "h5"]), max_size=6),
       policy=st.sampled_from((None, *POLICIES)))
def test_a_placement_is_a_connected_host_and_never_breaks_a_hard_policy(connected, members, policy):
    try:
        host = choose_host(connected, members, policy)
    except PlacementError:
        assert policy in ("affinity", "anti-affinity")
        return
    assert host in connected
    if policy == "anti-affinity":
        assert host not in members
    if policy == "affinity" and members:
        assert host in members
