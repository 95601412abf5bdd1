"""The app factory: the only way to build the Carryover web app."""

from __future__ import annotations

from flask import Flask, Request, jsonify
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from middleware.config import Config
from middleware.core import Carryover, build_carryover
from middleware.hooks import MAX_BODY_BYTES
from middleware.plugins import PluginRegistry
from middleware.store import MAX_ID


class StoreIdConverter(IntegerConverter):
    """Match a row id in a URL (<id:…>): a positive integer the store's ids can hold.

    A larger number matches no page (404): handed to the store, it would be an error there.
    """

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


class AdminSessionInterface(SecureCookieSessionInterface):
    """Open cookie sessions for the admin UI only.

    Webhooks and agent reads never carry one, and building the signer for each request
    would cost them a fifth of a millisecond.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Open the admin session; a null session anywhere else."""
        if not request.path.startswith("/admin"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def create_app(
    config: Config | None = None,
    registry: PluginRegistry | None = None,
    core: Carryover | None = None,
) -> Flask:
    """Build the web app for one installation (the worker is started by the caller)."""
    from middleware import context_api, health, hooks, security_headers
    from webui import admin, pop, views

    core = core or build_carryover(config or Config(), registry)
    app = Flask(__name__, template_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # Admin sessions are signed with secret_key; without one, with a key of this process
    # (sessions then end when it restarts).
    app.config["SECRET_KEY"] = core.link_secret
    app.config["SESSION_COOKIE_NAME"] = "carryover_admin"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = core.config.public_url.startswith("https://")
    app.session_interface = AdminSessionInterface()
    app.extensions["carryover"] = core
    app.url_map.converters["id"] = StoreIdConverter
    for blueprint in (hooks.bp, context_api.bp, health.bp, views.bp, pop.bp, admin.bp):
        app.register_blueprint(blueprint)
    security_headers.init_app(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        """Answer HTTP errors (404, 405, 413 …) as JSON with a reason."""
        # Keep the exception's own headers, e.g. the Allow that a 405 must carry.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(error=exc.description or exc.name), exc.code, headers

    return app
