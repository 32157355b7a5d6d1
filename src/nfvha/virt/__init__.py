"""Virtualization drivers: how an agent starts, stops and watches the instances on its host."""
