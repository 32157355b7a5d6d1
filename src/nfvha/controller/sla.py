"""Service availability levels of the seeds (HA_Analysis-H.rst, Table 1): the bounds each
fault's detection and recovery are judged against."""

from __future__ import annotations

# level: (detection bound, recovery bound), seconds; SAL1's recovery is "5–6 s"
LEVELS = {"SAL1": (1.0, 6.0), "SAL2": (5.0, 15.0), "SAL3": (10.0, 25.0)}


def verdict(level: str, detection_ms: float | None, recovery_ms: float | None) -> dict[str, str | None]:
    detect, recover = LEVELS[level]
    return {
        "level": level,
        "detection": None if detection_ms is None else "met" if detection_ms < detect * 1000 else "missed",
        "recovery": None if recovery_ms is None else "met" if recovery_ms <= recover * 1000 else "missed",
    }
