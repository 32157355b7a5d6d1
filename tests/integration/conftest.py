"""Fixtures that run nfvha for real: the CLI in subprocesses, real guests, a real webhook receiver."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.hatest.harness import Receiver, Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here runs real processes: `-m "not integration"` leaves the fast unit suite."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="nfvha-", dir="/tmp"))  # unix socket paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nfvha(state_dir: Path) -> Iterator[Server]:
    srv = Server(["up", "--api", "127.0.0.1:0", "--state-dir", str(state_dir), "-v"], state_dir)
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("s3cret")
    yield r
    r.httpd.shutdown()


@pytest.fixture(autouse=True)
def _no_leftover_instances() -> Iterator[None]:
    """Every test must leave no instance process behind (nfvha stops them on exit)."""
    yield
    out = subprocess.run(["pgrep", "-f", "-m nfvha.guest|hostile_guest"], capture_output=True, text=True).stdout
    mine = [p for p in out.split() if int(p) != os.getpid()]
    assert not mine, f"instance processes left running: {mine}"
