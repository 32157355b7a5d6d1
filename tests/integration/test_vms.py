"""Real VMs under QEMU (TCG), through the qemu driver and through libvirt: the reference
guest image runs nfvha's real guest daemon behind a real virtio-serial port.

Each driver gets one `nfvha up` and one VM that the tests below take through its faults in
order (every fault ends with the VM recovered and heartbeating), so that the suite boots
as few VMs as it can: each boot costs about five seconds under TCG.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.hatest.harness import Server, wait_until
from nfvha.hatest.vm import (
    LIBVIRT_URI,
    console,
    console_log,
    console_socket,
    destroy_domains,
    ensure_libvirtd,
    reference_vm,
    restart_libvirtd,
)
from nfvha.virt.domxml import channel_xml, metadata_xml

pytestmark = [pytest.mark.slow, pytest.mark.vm]
BOOT = 90.0  # generous: a boot is ~5 s alone, but CI machines are shared


@pytest.fixture(scope="module")
def image_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="nfvha-img-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", params=["qemu", "libvirt"])
def hv(request: pytest.FixtureRequest, image_dir: Path) -> Iterator[tuple[Server, dict]]:
    """`nfvha up` on one driver, with one heartbeating VM of the reference image."""
    driver = request.param
    if driver == "libvirt":
        ensure_libvirtd()
    state = Path(tempfile.mkdtemp(prefix="nfvha-", dir="/tmp"))
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state), "--driver", driver, "--allow-host-root",
                  "-v"], state)
    try:
        inst = srv.create(f"vm-{driver}", vm=reference_vm(image_dir))
        booted(srv, inst["id"])
        yield srv, inst
        assert srv.stop() == 0
    finally:
        srv.stop()
        if driver == "libvirt":
            destroy_domains()
        shutil.rmtree(state, ignore_errors=True)
    assert not subprocess.run(["pgrep", "-f", f"qemu-system.*{state}"], capture_output=True).stdout, \
        "QEMU processes left running"


def booted(srv: Server, iid: str) -> dict:
    """Wait for the VM's guest to heartbeat; if it does not, say what its console showed."""
    try:
        return srv.wait_heartbeating(iid, BOOT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe guest's console:\n{console_log(srv.state_dir, iid)}") from None


def recovered(srv: Server, iid: str, fault: dict) -> None:
    """The fault's recovery restarted the VM and its guest heartbeats again."""
    srv.wait_fault(iid, lambda f: f["id"] == fault["id"] and f["recovered_at"] is not None, BOOT)
    booted(srv, iid)


def new_fault(srv: Server, iid: str, before: set[str]) -> dict:
    return srv.wait_fault(iid, lambda f: f["id"] not in before, 30)


def fault_ids(srv: Server, iid: str) -> set[str]:
    return {f["id"] for f in srv.faults(iid)}


def test_guest_registers_and_heartbeats_over_virtio_serial(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    got = srv.instance(inst["id"])
    assert got["state"] == "running" and got["heartbeat_status"] == "heartbeating"
    assert got["interval_ms"] == 250  # asked for by the guest, through the image's kernel parameters
    assert got["protocol_errors"] == {}
    assert srv.faults(inst["id"]) == []


def test_guest_daemon_restarting_inside_the_vm_is_no_fault(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    iid = inst["id"]
    pid = srv.instance(iid)["pid"]
    console(console_socket(srv.state_dir, iid), "kill -TERM $(cat /guest.pid)")  # init restarts it
    wait_until(lambda: srv.instance(iid)["heartbeat_status"] != "heartbeating", 30, "the guest daemon's exit")
    booted(srv, iid)
    time.sleep(1.0)  # a fault would have shown by now: 2 missed challenges are 500 ms
    assert srv.faults(iid) == []
    assert srv.instance(iid)["pid"] == pid  # the same VM throughout


def test_unhealthy_application_is_reported_with_the_guests_corrective_action(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    iid = inst["id"]
    before = fault_ids(srv, iid)
    console(console_socket(srv.state_dir, iid), "wget -q -O /dev/null --post-data x http://127.0.0.1:8080/break")
    fault = new_fault(srv, iid, before)
    assert fault["reason"] == "unhealthy"
    assert fault["corrective_action"] == "reboot" and fault["recovery_action"] == "restart"
    recovered(srv, iid, fault)


def test_paused_vm_is_a_heartbeat_timeout(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    iid = inst["id"]
    before = fault_ids(srv, iid)
    srv.inject(iid, "hang")  # QMP stop / virDomainSuspend: the whole VM freezes
    fault = new_fault(srv, iid, before)
    assert fault["reason"] == "heartbeat_timeout"
    assert fault["fault_basis"] == "injected"
    recovered(srv, iid, fault)


def test_killed_qemu_is_an_exit_fault(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    iid = inst["id"]
    before = fault_ids(srv, iid)
    pid = srv.instance(iid)["pid"]
    srv.inject(iid, "crash")  # SIGKILL to QEMU
    fault = new_fault(srv, iid, before)
    assert fault["reason"] == "instance_exit", fault
    assert "QEMU" in fault["detail"]
    recovered(srv, iid, fault)
    assert srv.instance(iid)["pid"] != pid


def test_guest_kernel_panic_is_a_fault(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    iid = inst["id"]
    before = fault_ids(srv, iid)
    console(console_socket(srv.state_dir, iid), "echo c > /proc/sysrq-trigger")
    fault = new_fault(srv, iid, before)
    # the panicked guest resets, and a reset ends the VM (-no-reboot, on_reboot=destroy)
    assert fault["reason"] in ("instance_exit", "heartbeat_timeout"), fault
    recovered(srv, iid, fault)


def test_vm_requests_that_cannot_work_are_refused_and_change_nothing(hv: tuple[Server, dict]) -> None:
    srv, inst = hv
    before = srv.api.get("/v1/instances").json()
    cases = [
        ({"name": "x1", "command": ["true"], "vm": {"kernel": "/boot/k"}}, "exactly one of"),
        ({"name": "x2", "vm": {}}, "kernel"),
        ({"name": "x3", "vm": {"kernel": "vmlinux"}}, "kernel"),
        ({"name": "x4", "vm": {"kernel": "/k", "domain": "d"}}, "either"),
        ({"name": "x5", "vm": {"kernel": "/k", "memory_mb": 1}}, "memory_mb"),
        ({"name": "x6", "vm": {"kernel": "/nonexistent/vmlinux"}}, "/nonexistent/vmlinux"),
        ({"name": "x7", "vm": {"kernel": "/boot/k,if=none"}}, "kernel"),  # no QEMU option smuggled in a path
    ]
    for body, word in cases:
        resp = srv.api.post("/v1/instances", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert word in resp.text, (word, resp.text)
    assert srv.api.get("/v1/instances").json() == before
    # the application inside a VM is out of the platform's reach: said so, and nothing happens
    resp = srv.api.post(f"/v1/instances/{inst['id']}/faults", json={"kind": "unhealthy"})
    assert resp.status_code == 409 and "cannot inject 'unhealthy'" in resp.text
    assert srv.instance(inst["id"])["heartbeat_status"] == "heartbeating"


def test_deleting_a_vm_shuts_it_down_gracefully(hv: tuple[Server, dict], image_dir: Path) -> None:
    """The power button: the guest daemon says `exit` and the guest powers off; no fault."""
    srv, _ = hv
    inst = srv.create(f"gone-{srv.instance(hv[1]['id'])['host']}", vm=reference_vm(image_dir))
    booted(srv, inst["id"])
    started = time.monotonic()
    assert srv.api.delete(f"/v1/instances/{inst['id']}").status_code == 204
    assert time.monotonic() - started < 5.0, "the guest did not power off: QEMU was killed after the grace"
    assert srv.faults(inst["id"]) == []


# ---- libvirt: an operator's own domain ------------------------------------------------------

OPERATOR_DOMAIN = "vnf-operator-test"


@pytest.fixture
def operator_domain(image_dir: Path) -> Iterator[str]:
    """A persistent domain defined by the operator, with nfvha's channel and metadata added."""
    ensure_libvirtd()
    vm = reference_vm(image_dir)
    xml = f"""<domain type='qemu'><name>{OPERATOR_DOMAIN}</name>
      <metadata>{metadata_xml(heartbeat=True)}</metadata>
      <memory unit='MiB'>256</memory><vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type><kernel>{vm['kernel']}</kernel><initrd>{vm['initrd']}</initrd>
        <cmdline>{vm['cmdline']}</cmdline></os>
      <features><acpi/></features><on_reboot>destroy</on_reboot>
      <devices>{channel_xml()}<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
        <filesystem type='mount' accessmode='passthrough' multidevs='remap'><source dir='/'/>
          <target dir='hostroot'/><readonly/></filesystem><memballoon model='none'/></devices>
      <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel></domain>"""
    path = image_dir / "operator.xml"
    path.write_text(xml)
    virsh = ["virsh", "-c", LIBVIRT_URI]
    destroy_domains(OPERATOR_DOMAIN)  # a leftover of an interrupted run
    subprocess.run([*virsh, "define", str(path)], check=True, capture_output=True)
    subprocess.run([*virsh, "start", OPERATOR_DOMAIN], check=True, capture_output=True)
    yield OPERATOR_DOMAIN
    ensure_libvirtd()
    destroy_domains(OPERATOR_DOMAIN)


def test_libvirt_finds_an_operators_domain_and_adopts_it_across_agent_restarts(operator_domain: str,
                                                                               state_dir: Path) -> None:
    args = ["up", "--api", "127.0.0.1:0", "--state-dir", str(state_dir), "--driver", "libvirt", "--allow-host-root",
            "-v"]
    srv = Server(args, state_dir)
    try:
        inst = wait_until(lambda: next((i for i in srv.api.get("/v1/instances").json()
                                        if i["name"] == operator_domain), None), 30, "the domain found")
        assert inst["vm"] == {"domain": operator_domain} and inst["heartbeat"]
        pid = booted(srv, inst["id"])["pid"]
        assert srv.stop() == 0
        # the VM outlives its agent, and the next agent takes it over as it is
        srv = Server(args, state_dir)
        again = booted(srv, inst["id"])
        assert again["pid"] == pid
        assert [i["name"] for i in srv.api.get("/v1/instances").json()] == [operator_domain]
        # libvirtd restarts (an upgrade): the VM runs on, and the agent reconnects when it next needs it
        restart_libvirtd()
        # destroyed behind nfvha's back: a fault at once, and recovery starts it again (a libvirtd
        # just started may still be reconnecting to its domains: destroy once it can)
        wait_until(lambda: subprocess.run(["virsh", "-c", LIBVIRT_URI, "destroy", operator_domain],
                                          capture_output=True).returncode == 0, 30, "virsh destroy")
        fault = srv.wait_fault(inst["id"], timeout=30)
        assert fault["reason"] == "instance_exit"
        recovered(srv, inst["id"], fault)
        assert srv.faults(inst["id"])[0]["recovery_state"] == "done"
        # leaving nfvha leaves the operator's VM running
        assert srv.api.delete(f"/v1/instances/{inst['id']}").status_code == 204
        state = subprocess.run(["virsh", "-c", LIBVIRT_URI, "domstate", operator_domain], capture_output=True,
                               text=True).stdout.strip()
        assert state == "running"
    finally:
        assert srv.stop() == 0
