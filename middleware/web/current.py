"""The installation behind the current request: what views and blueprints work with."""

from __future__ import annotations

from flask import current_app

from middleware.installation import Installation


def current_installation() -> Installation:
    """Return the installation the current request's web app was built around."""
    core: Installation = current_app.extensions["carryover"]
    return core
