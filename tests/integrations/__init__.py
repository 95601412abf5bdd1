"""Integrations: upstream faults, pauses and policies."""
