"""Real VMs for tests and benchmarks: the reference image, libvirtd, the guest's console."""

from __future__ import annotations

import fcntl
import shutil
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

from ..virt import image

LIBVIRT_URI = "qemu:///system"


def reference_vm(out: Path, interval_ms: int = 250) -> dict:
    """The `vm` spec of the reference image, built into `out` (once)."""
    if not (out / "vm.json").exists():
        image.build(out, interval_ms)
    return image.vm_spec(out.resolve(), interval_ms)


def libvirtd_running() -> bool:
    return subprocess.run(["virsh", "-c", LIBVIRT_URI, "version"], capture_output=True).returncode == 0


def ensure_libvirtd() -> None:
    """Start virtlogd and libvirtd as daemons unless one answers (no systemd here)."""
    if libvirtd_running():
        return
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([shutil.which(daemon) or f"/usr/sbin/{daemon}", "-d"], check=True)
    deadline = time.monotonic() + 15
    while not libvirtd_running():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer within 15 s")
        time.sleep(0.1)


def destroy_domains(prefix: str = "nfvha-") -> None:
    out = subprocess.run(["virsh", "-c", LIBVIRT_URI, "list", "--name", "--all"], capture_output=True, text=True)
    for name in out.stdout.split():
        if name.startswith(prefix):
            subprocess.run(["virsh", "-c", LIBVIRT_URI, "destroy", name], capture_output=True)
            subprocess.run(["virsh", "-c", LIBVIRT_URI, "undefine", name], capture_output=True)


def console_socket(state_dir: Path, instance_id: str) -> Path:
    """The newest console socket of an instance (the libvirt driver makes one per start)."""
    found = sorted((state_dir / "con").glob(f"{instance_id}*.sock"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no console socket for {instance_id} in {state_dir / 'con'}")
    return found[-1]


def console_log(state_dir: Path, instance_id: str, tail: int = 3000) -> str:
    path = state_dir / "log" / f"{instance_id}.console.log"
    return path.read_text(errors="replace")[-tail:] if path.exists() else f"(no console log at {path})"


def console(path: Path, command: str, timeout: float = 10.0) -> None:
    """Type a command at the reference guest's shell on its serial console; return once the
    guest's terminal has echoed it and QEMU has taken every byte of it.

    QEMU drops what a console client sent but the guest's UART has not yet taken when the
    client hangs up, so leaving at the echo alone can lose the command's newline."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        s.settimeout(0.02)
        seen = b""
        deadline = time.monotonic() + timeout
        while command.encode() not in seen or unread(s):
            if time.monotonic() > deadline:
                raise TimeoutError(f"console {path}: {command!r} not taken within {timeout} s; it showed {seen!r}")
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError(f"console {path} closed before echoing {command!r}")
            seen = seen[-4096:] + chunk


def unread(s: socket.socket) -> int:
    """Bytes sent on a unix socket that its peer has not read yet."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def restart_libvirtd() -> None:
    """Stop libvirtd (its domains' QEMUs run on) and start it again."""
    subprocess.run(["pkill", "-TERM", "-x", "libvirtd"])
    deadline = time.monotonic() + 15
    while subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not stop within 15 s")
        time.sleep(0.05)
    ensure_libvirtd()
