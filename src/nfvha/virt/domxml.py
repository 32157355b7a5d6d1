"""libvirt domain XML: nfvha's channel and metadata elements, and the domains nfvha defines.

Pure text, no libvirt import: `nfvha virt channel-xml` and the tests use it anywhere.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from ..control import VmSpec
from .base import DriverError

NS = "https://nfvha.dev/xmlns/instance/1"
PORT_NAME = "nfvha.guest.0"


def channel_xml(path: str | None = None) -> str:
    """The <channel> element that gives a domain nfvha's virtio-serial port.

    Without a path, libvirt chooses one under /var/lib/libvirt/qemu/channel/target/.
    """
    source = f"<source mode='bind' path={quoteattr(path)}/>" if path else ""
    return f"<channel type='unix'>{source}<target type='virtio' name='{PORT_NAME}'/></channel>"


def metadata_xml(heartbeat: bool = True, instance: str | None = None) -> str:
    """nfvha's metadata element: the domain is an nfvha instance, heartbeat on or off.

    nfvha's own domains name their instance; an operator's carry none until adopted.
    """
    owner = f" instance={quoteattr(instance)}" if instance else ""
    return f"<nfvha:instance xmlns:nfvha='{NS}' heartbeat='{'on' if heartbeat else 'off'}'{owner}/>"


def domain_xml(name: str, vm: VmSpec, channel: str, console: str, instance_id: str,
               domain_type: str = "qemu", console_log: str | None = None) -> str:
    if not (vm.kernel or vm.disk):
        raise DriverError("vm: give a kernel or a disk to boot, or the name of an existing libvirt domain")
    boot = f"<kernel>{escape(vm.kernel)}</kernel><cmdline>{escape(vm.cmdline)}</cmdline>" if vm.kernel else ""
    if vm.kernel and vm.initrd:
        boot += f"<initrd>{escape(vm.initrd)}</initrd>"
    devices = ["<controller type='usb' model='none'/>",  # a USB controller costs boot time and serves nothing
               channel_xml(channel),
               f"<serial type='unix'><source mode='bind' path={quoteattr(console)}/>"
               + (f"<log file={quoteattr(console_log)} append='on'/>" if console_log else "")
               + "<target port='0'/></serial>",
               "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
               "<memballoon model='none'/>"]
    if vm.disk:
        devices.append(f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                       f"<source file={quoteattr(vm.disk)}/><target dev='vda' bus='virtio'/><transient/></disk>")
    # the reference image reads the host's whole root: its QEMU runs as root, nothing relabelled
    seclabel = ""
    if vm.share_host_root:
        devices.append("<filesystem type='mount' accessmode='passthrough' multidevs='remap'>"
                       "<source dir='/'/><target dir='hostroot'/><readonly/></filesystem>")
        seclabel = "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>
  <metadata>{metadata_xml(instance=instance_id)}</metadata>
  <memory unit='MiB'>{vm.memory_mb}</memory><vcpu>{vm.vcpus}</vcpu>
  <sysinfo type='smbios'><system><entry name='serial'>{escape(instance_id)}</entry></system></sysinfo>
  <os><type arch='x86_64'>hvm</type>{boot}<smbios mode='sysinfo'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>{"".join(devices)}</devices>
  {seclabel}
</domain>"""


def live_sockets(xml: str) -> tuple[str | None, str | None]:
    """The host sockets of a running domain: nfvha's channel, and its first serial port (the console)."""
    root = ET.fromstring(xml)
    channel = None
    for chan in root.iterfind("devices/channel"):
        target, source = chan.find("target"), chan.find("source")
        if target is not None and target.get("name") == PORT_NAME and source is not None:
            channel = source.get("path")
    serial = root.find("devices/serial[@type='unix']/source")
    return channel, serial.get("path") if serial is not None else None
