"""What the agent reads in its tools: the summary, rendered and queued in the outbox."""
