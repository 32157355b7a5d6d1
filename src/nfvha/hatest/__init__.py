"""HA testing: run nfvha for real, inject faults, measure. Used by tests/ and bench/."""
