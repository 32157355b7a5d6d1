"""What the VM drivers hand to QEMU and libvirt, and the reference image's pieces: pure logic."""

from __future__ import annotations

import lzma
import stat
import xml.etree.ElementTree as ET

import pytest
from pydantic import ValidationError

from nfvha.control import VmSpec
from nfvha.controller.schemas import InstanceCreate
from nfvha.virt.base import DriverError
from nfvha.virt.domxml import NS, PORT_NAME, channel_xml, domain_xml, live_sockets, metadata_xml
from nfvha.virt.image import Cpio, extract_vmlinux
from nfvha.virt.qemu import qemu_argv

REF = VmSpec(kernel="/img/vmlinux", initrd="/img/initrd.img", cmdline="console=ttyS0 a=b", share_host_root=True)


def test_qemu_gets_the_channel_port_no_reboot_and_the_host_root_only_when_asked():
    argv = qemu_argv(REF, "/s/ch.sock", "/s/con.sock", "/s/qmp.sock", "iid-1")
    joined = " ".join(argv)
    assert f"virtserialport,chardev=ch0,name={PORT_NAME}" in joined
    assert "socket,id=ch0,path=/s/ch.sock,server=on,wait=off" in joined
    assert "-no-reboot" in argv  # a guest reset (a panic's reboot) ends the VM: an exit, not a silence
    assert argv[argv.index("-append") + 1] == "console=ttyS0 a=b"  # one argument, whatever it holds
    assert "virtio-9p-pci,fsdev=fs0,mount_tag=hostroot" in joined and "readonly=on" in joined
    plain = " ".join(qemu_argv(VmSpec(disk="/img/disk.raw"), "/c", "/k", "/q", "i"))
    assert "9p" not in plain and "file=/img/disk.raw,if=virtio,snapshot=on" in plain and "-kernel" not in plain


def test_qemu_refuses_what_it_cannot_boot():
    with pytest.raises(DriverError, match="libvirt"):
        qemu_argv(VmSpec(domain="vnf"), "/c", "/k", "/q", "i")
    with pytest.raises(DriverError, match="kernel or a disk"):
        qemu_argv(VmSpec(), "/c", "/k", "/q", "i")


def test_domain_xml_is_well_formed_whatever_the_names_and_paths_hold():
    vm = VmSpec(kernel="/img/a'b&c<d>", cmdline="x=\"1\" & y='2'", share_host_root=True)
    root = ET.fromstring(domain_xml("nfvha-i-1", vm, "/s/ch'1.sock", "/s/con.sock", "i<1>", "qemu"))
    assert root.findtext("os/kernel") == "/img/a'b&c<d>"
    assert root.findtext("os/cmdline") == "x=\"1\" & y='2'"
    chan = root.find("devices/channel")
    assert chan.find("target").get("name") == PORT_NAME and chan.find("source").get("path") == "/s/ch'1.sock"
    meta = root.find(f"metadata/{{{NS}}}instance")
    assert meta.get("instance") == "i<1>" and meta.get("heartbeat") == "on"
    assert root.find("devices/filesystem/target").get("dir") == "hostroot"
    assert root.find("seclabel") is not None  # only the host-root image runs QEMU as root
    plain = ET.fromstring(domain_xml("n", VmSpec(disk="/d.raw"), "/c", "/k", "i"))
    assert plain.find("seclabel") is None and plain.find("devices/filesystem") is None
    assert plain.find("devices/disk/transient") is not None
    with pytest.raises(DriverError):
        domain_xml("n", VmSpec(), "/c", "/k", "i")


def test_operator_elements_and_live_sockets():
    assert ET.fromstring(channel_xml()).find("source") is None  # libvirt picks the path
    meta = ET.fromstring(metadata_xml(heartbeat=False))
    assert meta.tag == f"{{{NS}}}instance" and meta.get("heartbeat") == "off" and meta.get("instance") is None
    live = f"""<domain><devices>
      <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/d/x'/>
        <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
      {channel_xml('/run/ch.sock')}
      <serial type='unix'><source mode='bind' path='/run/con.sock'/></serial></devices></domain>"""
    assert live_sockets(live) == ("/run/ch.sock", "/run/con.sock")
    assert live_sockets("<domain><devices/></domain>") == (None, None)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    files, at = {}, 0
    while True:
        fields = [int(data[at + 6 + 8 * k: at + 14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = data[name_at:name_at + namesize - 1].decode()
        body_at = (name_at + namesize + 3) // 4 * 4
        if name == "TRAILER!!!":
            return files
        files[name] = (mode, data[body_at:body_at + size])
        at = (body_at + size + 3) // 4 * 4


def test_initramfs_archive_is_newc_with_modes_and_contents():
    cpio = Cpio()
    cpio.add("bin", stat.S_IFDIR | 0o755)
    cpio.add("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n")
    cpio.add("odd", stat.S_IFREG | 0o644, b"x" * 5)
    files = read_newc(cpio.finish())
    assert files["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n")
    assert files["odd"][1] == b"xxxxx" and stat.S_ISDIR(files["bin"][0])


def test_the_elf_kernel_is_found_inside_a_compressed_bzimage():
    elf = b"\x7fELF" + bytes(range(256)) * 64
    decoy = lzma.compress(b"not a kernel", format=lzma.FORMAT_XZ)
    bzimage = b"MZ setup code" + decoy + b"\x00" * 7 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert extract_vmlinux(bzimage) == elf
    with pytest.raises(ValueError, match="no XZ-compressed ELF"):
        extract_vmlinux(b"MZ nothing here")


@pytest.mark.parametrize(("body", "word"), [
    ({"name": "a", "command": ["x"], "vm": {"kernel": "/k"}}, "exactly one"),
    ({"name": "a"}, "exactly one"),
    ({"name": "a", "vm": {}}, "kernel"),
    ({"name": "a", "vm": {"kernel": "relative/k"}}, "kernel"),
    ({"name": "a", "vm": {"kernel": "/k,if=none"}}, "kernel"),
    ({"name": "a", "vm": {"disk": "/d", "domain": "d"}}, "either"),
    ({"name": "a", "vm": {"kernel": "/k", "vcpus": 0}}, "vcpus"),
    ({"name": "a", "vm": {"kernel": "/k", "cmdline": "x" * 2049}}, "cmdline"),
    ({"name": "a", "vm": {"domain": "bad name"}}, "domain"),
    ({"name": "a", "vm": {"kernel": "/k", "gpu": True}}, "gpu"),
])
def test_vm_requests_are_validated_naming_the_field(body, word):
    with pytest.raises(ValidationError, match=word):
        InstanceCreate.model_validate(body)
    assert InstanceCreate.model_validate({"name": "a", "vm": {"domain": "vnf-1"}}).vm.domain == "vnf-1"
