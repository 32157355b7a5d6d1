"""python -m nfvha.guest --channel PATH [options]"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys

from ..wire.framing import ProtocolError
from ..wire.heartbeat import CORRECTIVE_ACTIONS
from .daemon import GuestConfig, GuestDaemon
from .health import CommandCheck, HealthCheck, HttpCheck
from .localapi import default_path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nfvha.guest", description="nfvha guest heartbeat daemon")
    env = os.environ.get("NFVHA_CHANNEL")
    p.add_argument("--channel", default=f"unix:{env}" if env else "auto",
                   help="virtio-serial device path, 'auto' (find port nfvha.guest.0), or unix:PATH to serve "
                        "a socket (default: unix:$NFVHA_CHANNEL if set, else auto)")
    p.add_argument("--name", default=None, help="name sent at registration (default: hostname)")
    p.add_argument("--interval-ms", type=int, default=1000, help="heartbeat interval asked of the host")
    p.add_argument("--corrective-action", choices=CORRECTIVE_ACTIONS, default="reboot",
                   help="what the platform should do when this guest is unhealthy")
    p.add_argument("--vote-secs", type=int, default=10)
    check = p.add_mutually_exclusive_group()
    check.add_argument("--health-cmd", help="healthy iff this command exits 0 (shell-quoted)")
    check.add_argument("--health-http", help="healthy iff a GET of this URL answers 2xx")
    p.add_argument("--health-timeout-ms", type=int, default=2000)
    p.add_argument("--api-socket", default=None,
                   help="the local socket for server-group messaging ('none' to serve none; default: beside a "
                        "unix channel, else /run/nfvha-guest.sock)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build(args: argparse.Namespace, health: HealthCheck | None = None) -> GuestDaemon:
    timeout = args.health_timeout_ms / 1000
    if health is None:
        if args.health_cmd:
            health = CommandCheck(shlex.split(args.health_cmd), timeout)
        elif args.health_http:
            health = HttpCheck(args.health_http, timeout)
    config = GuestConfig(interval_ms=args.interval_ms, corrective_action=args.corrective_action,
                         vote_secs=args.vote_secs, verbose=args.verbose)
    if args.name:
        config.name = args.name
    api = args.api_socket or default_path(args.channel)
    return GuestDaemon(args.channel, config, health, api_socket=None if api == "none" else api)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sg"]:
        from .sgcli import main as sg_main
        return sg_main(argv[1:])
    p = parser()
    args = p.parse_args(argv)
    try:
        daemon = build(args)
    except ProtocolError as err:
        p.error(err.detail)
    try:
        asyncio.run(daemon.run())
    except (FileNotFoundError, PermissionError) as exc:
        print(f"nfvha-guest: cannot open channel {args.channel}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
