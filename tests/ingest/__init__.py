"""Inbound webhooks: verify, store, reply."""
