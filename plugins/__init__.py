"""Integrations, one folder per plugin key; each is registered as a carryover.plugins entry point."""
