"""Receive webhooks: verify, store durably, reply (verify → store)."""
