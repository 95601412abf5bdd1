"""Agent-facing reads: the context API and the screen-pop."""
