"""Admin and agent pages."""
