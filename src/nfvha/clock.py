"""Wall-clock timestamps derived from the monotonic clock.

Every time the controller stores is `wall(mono)`: one anchor per process, so a difference
of two stored times is a monotonic duration, immune to wall-clock steps.
"""

from __future__ import annotations

import time

_ANCHOR_MONO = time.monotonic()
_ANCHOR_WALL = time.time()


def wall(mono: float) -> float:
    return _ANCHOR_WALL + (mono - _ANCHOR_MONO)


def now() -> float:
    return wall(time.monotonic())
