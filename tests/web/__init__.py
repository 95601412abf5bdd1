"""Serving and security headers."""
