"""The simulators and the demo (development only)."""
