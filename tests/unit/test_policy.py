from nfvha.controller.recovery import decide
from nfvha.controller.sla import verdict


def test_auto_recovery_follows_the_guests_corrective_action():
    assert decide("auto", "reboot") == "restart"
    assert decide("auto", "stop") == "stop"
    assert decide("auto", "log") == "none" and decide("auto", "none") == "none"


def test_an_explicit_policy_overrides_the_guest():
    assert decide("restart", "log") == "restart"
    assert decide("none", "reboot") == "none"


def test_each_fault_is_judged_against_its_service_availability_level():
    assert verdict("SAL1", 999.0, 6000.0) == {"level": "SAL1", "detection": "met", "recovery": "met"}
    assert verdict("SAL1", 1000.0, 6001.0) == {"level": "SAL1", "detection": "missed", "recovery": "missed"}
    assert verdict("SAL2", 4000.0, None) == {"level": "SAL2", "detection": "met", "recovery": None}
    assert verdict("SAL3", None, 25000.0)["recovery"] == "met"
