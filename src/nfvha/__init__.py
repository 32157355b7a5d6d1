"""nfvha: high availability for network functions running in VMs."""

__version__ = "0.1.0"
