"""After the reply: map, enrich, resolve, append, queue notes (the worker's part)."""
