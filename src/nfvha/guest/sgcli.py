"""python -m nfvha.guest sg broadcast TEXT | status | listen [--socket PATH]

A client of the guest daemon's local socket (nfvha.guest.localapi), for shell scripts and
applications that are not in Python.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from .localapi import default_path


def _default_socket() -> str:
    channel = os.environ.get("NFVHA_CHANNEL")
    return default_path(f"unix:{channel}" if channel else "auto")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m nfvha.guest sg", description="server-group messaging")
    p.add_argument("--socket", default=None, help="the guest daemon's local socket")
    sub = p.add_subparsers(dest="op", required=True)
    b = sub.add_parser("broadcast", help="send TEXT to every other member of this instance's group")
    b.add_argument("text")
    sub.add_parser("status", help="print every member of the group, this one included (JSON lines)")
    sub.add_parser("listen", help="print broadcasts and peer notifications as they come (JSON lines)")
    args = p.parse_args(argv)
    request = {"op": args.op, "data": args.text} if args.op == "broadcast" else {"op": args.op}
    path = args.socket or _default_socket()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(json.dumps(request).encode() + b"\n")
            lines = s.makefile("r", encoding="utf-8")
            answer = json.loads(lines.readline() or '{"ok": false, "error": "the daemon closed the connection"}')
            if not answer.get("ok"):
                print(f"nfvha-guest sg: {answer.get('error')}", file=sys.stderr)
                return 1
            if args.op == "status":
                for member in answer["members"]:
                    print(json.dumps(member))
            elif args.op == "listen":
                for line in lines:
                    print(line.rstrip("\n"), flush=True)
    except OSError as exc:
        print(f"nfvha-guest sg: cannot reach the guest daemon at {path}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
