"""Carryover: cross-channel customer context for the service tools a company already runs."""

from middleware.app import create_app

__all__ = ["create_app"]
