"""The in-guest daemon and library (standard library only)."""

from .daemon import GuestConfig, GuestDaemon
from .health import CallableCheck, CommandCheck, HealthCheck, HttpCheck

__all__ = ["CallableCheck", "CommandCheck", "GuestConfig", "GuestDaemon", "HealthCheck", "HttpCheck"]
