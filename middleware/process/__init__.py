"""After the reply: map, enrich, resolve, append, decide (the worker's part of the pipeline)."""
