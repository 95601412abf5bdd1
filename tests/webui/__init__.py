"""Admin UI pages."""
