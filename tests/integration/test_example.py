"""The examples run with the one command their README gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_active_standby_example_stays_single_active():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "active-standby" / "run.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tenant network cut" in out.stdout and out.stdout.rstrip().endswith("PASS")
