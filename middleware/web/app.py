"""The app factory: the only way to build the Carryover web app."""

from __future__ import annotations

from importlib.metadata import entry_points

from flask import Blueprint, Flask, Request, jsonify
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter, Map

from middleware.config import Config
from middleware.ingest.hooks import MAX_BODY_BYTES
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.store.tables import MAX_ID

PAGES_ENTRY_POINT_GROUP = "carryover.pages"


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


def page_blueprints() -> list[Blueprint]:
    """Load the blueprints of the pages for people (the admin UI, the pop) by entry point.

    The pages sit above the core and import it; the core finds them the way it finds
    plugins, so that no module of the core imports upwards.
    """
    return [
        ep.load()
        for ep in sorted(entry_points(group=PAGES_ENTRY_POINT_GROUP), key=lambda e: e.name)
    ]


def create_app(
    config: Config | None = None,
    registry: PluginRegistry | None = None,
    core: Installation | None = None,
) -> Flask:
    """Build the web app for one installation (the worker is started by the caller)."""
    from middleware.ingest import hooks
    from middleware.reads import context_api
    from middleware.web import health, metrics, security_headers

    core = core or build_installation(config or Config(), registry)
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
    for blueprint in (hooks.bp, context_api.bp, health.bp, metrics.bp, *page_blueprints()):
        app.register_blueprint(blueprint)
    security_headers.init_app(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        """Answer HTTP errors (404, 405, 413 …) as JSON with a reason."""
        # Keep the exception's own headers, e.g. the Allow that a 405 must carry.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(error=exc.description or exc.name), exc.code, headers

    return app
