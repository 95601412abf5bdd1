"""Integrations, one folder per plugin key, each registered as a carryover.plugins entry point."""
