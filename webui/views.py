"""The site's root: Carryover's pages for people are the admin UI."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, url_for
from flask.typing import ResponseReturnValue

bp = Blueprint("webui", __name__)
ICON = (Path(__file__).resolve().parent / "static" / "favicon.svg").read_bytes()


@bp.get("/")
def index() -> ResponseReturnValue:
    """Send visitors to the admin UI."""
    return redirect(url_for("admin.overview"))


@bp.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    """The icon browsers ask every page's host for (an SVG, which they all show)."""
    response = Response(ICON, mimetype="image/svg+xml")
    response.cache_control.max_age = 86400
    return response
