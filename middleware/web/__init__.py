"""Serve HTTP: the app factory, the server, security headers, health."""
