"""Development only: simulated upstreams, the demo and their helpers (not in the wheel)."""
