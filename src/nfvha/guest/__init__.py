"""The in-guest daemon and library (standard library only)."""

from .daemon import GuestConfig, GuestDaemon
from .group import GroupError
from .health import CallableCheck, CommandCheck, HealthCheck, HttpCheck

__all__ = ["CallableCheck", "CommandCheck", "GroupError", "GuestConfig", "GuestDaemon", "HealthCheck",
           "HttpCheck"]
