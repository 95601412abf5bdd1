"""Agent-facing reads: the context API, what the screen-pop shows, and its live updates."""
