"""The per-host agent: channel sessions, fault detection, reports to the controller."""
