"""The worker and the pipeline after the reply."""
