"""The reference guest image: a Debian kernel and a busybox initramfs that runs nfvha's
real guest daemon (and a demo application) inside the VM.

The guest runs the host's own Python: the VM mounts the host's root read-only over
virtio-9p and chroots into it, so the image holds no interpreter and builds in a second or
two. That needs Debian's generic kernel (the cloud flavour has no 9p); its compressed
bzImage costs seconds of in-guest decompression under TCG, so the ELF vmlinux inside it
is extracted once here and booted directly.

    nfvha image build [--out DIR]   (or scripts/build-guest-image)

writes DIR/vmlinux, DIR/initrd.img and DIR/vm.json, the `vm` spec to create instances with.
Kernel parameters read by the image's init: nfvha.python, nfvha.path (PYTHONPATH of the
guest code), nfvha.interval (ms), nfvha.action (the corrective action asked for).
"""

from __future__ import annotations

import compileall
import json
import lzma
import os
import shutil
import stat
import sys
from io import BytesIO
from pathlib import Path

import nfvha

MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
           "virtio_console", "virtio-rng", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "button", "evdev"]
XZ_MAGIC = b"\xfd7zXZ\x00"
DEMO_PORT = 8080

INIT = r"""#!/bin/busybox sh
# nfvha reference guest: PID 1 of the initramfs (PID 1 must never exit: the kernel would panic)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m.ko; done
PY=/usr/bin/python3; GP=; IV=1000; ACT=reboot
for a in $(cat /proc/cmdline); do
  case "$a" in
    nfvha.python=*) PY=${a#*=};; nfvha.path=*) GP=${a#*=};;
    nfvha.interval=*) IV=${a#*=};; nfvha.action=*) ACT=${a#*=};;
  esac
done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || poweroff -f
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mount -t tmpfs run /host/run  # the guest's own /run (the daemon's local socket lives there)
ifconfig lo 127.0.0.1 up
NAME=$(cat /sys/class/dmi/id/product_serial 2>/dev/null); hostname "${NAME:-nfvha-guest}"
# the console: a shell for operators and tests (hvc-less: the first serial port)
setsid sh -c 'while true; do sh </dev/ttyS0 >/dev/ttyS0 2>&1; done' &
# the power button (ACPI: what `virsh shutdown` and the qemu driver's graceful stop press):
# let the guest daemon say `exit`, then power off
for e in /sys/class/input/event*; do
  [ "$(cat $e/device/name 2>/dev/null)" = "Power Button" ] || continue
  (head -c 1 /dev/input/${e##*/} >/dev/null && pid=$(cat /guest.pid) && kill -TERM $pid &&
   for i in $(seq 40); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done; poweroff -f) &
done
# the demo VNF with its guest daemon (pid in /guest.pid), restarted whenever it ends
while true; do
  chroot /host /usr/bin/env PYTHONPATH="$GP" "$PY" -S -u -m nfvha.guest.demo --channel auto \
    --port __PORT__ --interval-ms "$IV" --corrective-action "$ACT" >/dev/ttyS0 2>&1 &
  echo $! >/guest.pid
  wait $!
  sleep 0.2
done
"""


def find_kernel(boot: Path = Path("/boot")) -> tuple[Path, str]:
    """The newest generic (not cloud) Debian kernel and its release."""
    kernels = sorted(p for p in boot.glob("vmlinuz-*-amd64") if "cloud" not in p.name)
    if not kernels:
        raise SystemExit("no generic kernel in /boot: apt-get install linux-image-amd64")
    release = kernels[-1].name.removeprefix("vmlinuz-")
    return kernels[-1], release


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside an XZ-compressed bzImage (QEMU boots it directly, via PVH)."""
    at = bzimage.find(XZ_MAGIC)
    while at >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(bzimage[at:])
            if elf.startswith(b"\x7fELF"):
                return elf
        except lzma.LZMAError:
            pass
        at = bzimage.find(XZ_MAGIC, at + 1)
    raise ValueError("no XZ-compressed ELF kernel in this bzImage")


class Cpio:
    """A newc archive, the initramfs format."""

    def __init__(self) -> None:
        self.out = BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.out.getvalue()


def module_path(release: str, name: str) -> Path:
    root = Path("/lib/modules") / release / "kernel"
    for candidate in (name, name.replace("-", "_")):
        found = list(root.rglob(f"{candidate}.ko")) + list(root.rglob(f"{candidate}.ko.xz"))
        if found:
            return found[0]
    raise SystemExit(f"kernel module {name} not found for {release}")


def initramfs(release: str, busybox: Path) -> bytes:
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "host"):
        cpio.add(d, stat.S_IFDIR | 0o755)
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
    for name in MODULES:
        path = module_path(release, name)
        data = path.read_bytes()
        cpio.add(f"lib/modules/{name}.ko", stat.S_IFREG | 0o644,
                 lzma.decompress(data) if path.suffix == ".xz" else data)
    cpio.add("modules", stat.S_IFREG | 0o644, " ".join(MODULES).encode())
    cpio.add("init", stat.S_IFREG | 0o755, INIT.replace("__PORT__", str(DEMO_PORT)).encode())
    return cpio.finish()


def guest_python() -> str:
    """An interpreter path that the guest sees too (it shares the host's root)."""
    for candidate in (sys._base_executable, sys.executable, "/usr/bin/python3"):  # type: ignore[attr-defined]
        if candidate and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    raise SystemExit("no python3 interpreter found")


def vm_spec(out: Path, interval_ms: int = 1000, action: str = "reboot") -> dict:
    """The `vm` part of an instance created from this image."""
    code = Path(nfvha.__file__).resolve().parent.parent  # the guest package is stdlib-only
    return {"kernel": str(out / "vmlinux"), "initrd": str(out / "initrd.img"), "share_host_root": True,
            "memory_mb": 256, "vcpus": 1,
            # mitigations and TSC checks cost ~250 ms of boot under TCG, and guard nothing there
            "cmdline": f"console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable no_timer_check "
                       f"nfvha.python={guest_python()} nfvha.path={code} nfvha.interval={interval_ms} "
                       f"nfvha.action={action}"}


def build(out: Path, interval_ms: int = 1000) -> dict:
    bzimage, release = find_kernel()
    busybox = shutil.which("busybox")
    if busybox is None or b"ELF" not in Path(busybox).read_bytes()[:4]:
        raise SystemExit("no busybox: apt-get install busybox-static")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vmlinux").write_bytes(extract_vmlinux(bzimage.read_bytes()))
    (out / "initrd.img").write_bytes(initramfs(release, Path(busybox)))
    # the guest mounts the code read-only: compile it here, or it is compiled on every boot, slowly
    for package in ("wire", "guest"):
        compileall.compile_dir(Path(nfvha.__file__).parent / package, quiet=1)
    compileall.compile_file(nfvha.__file__, quiet=1)
    spec = vm_spec(out.resolve(), interval_ms)
    (out / "vm.json").write_text(json.dumps(spec, indent=2) + "\n")
    return spec


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "nfvha" / "image"
    print(json.dumps(build(target)))
