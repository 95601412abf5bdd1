"""The site's root: Carryover's pages for people are the admin UI."""

from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask.typing import ResponseReturnValue

bp = Blueprint("webui", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """Send visitors to the admin UI."""
    return redirect(url_for("admin.overview"))
