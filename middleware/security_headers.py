"""Security headers on every response: a strict Content-Security-Policy and a frame policy.

Every page Carryover serves takes its scripts and styles from its own static files, so the
policy allows no inline script or style at all: markup slipped into a page (a customer's
name, a payload shown in the admin UI) can run nothing and restyle nothing. Admin pages may
be framed by no one, so no other site can overlay them and trick an admin into a click on
Replay or Erase. The screen-pop is made to be framed, by the softphones and CRMs that show
it (Twilio Flex, Salesforce, a PBX's CRM frame): the origins of `pop.frame_ancestors` may.
"""

from __future__ import annotations

from flask import Flask, Response, request

from middleware.core import Carryover

# For HTML pages. form-action and base-uri do not fall back to default-src, so they are named.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'"
)
# For everything else (JSON, XML, event streams, static files): a response opened as a page
# by mistake, or sniffed as one by an old browser, loads nothing.
OTHER_POLICY = "default-src 'none'"
FRAMED_BLUEPRINTS = frozenset({"pop"})  # the screen-pop and its event stream
REFERRER_POLICY = "same-origin"  # nothing leaves for other sites, e.g. a pop's signed link


def init_app(app: Flask) -> None:
    """Add the security headers to every response of the app."""
    core: Carryover = app.extensions["carryover"]
    ancestors = core.config.pop["frame_ancestors"]
    pop_frame_ancestors = "frame-ancestors " + " ".join(ancestors)
    # Browsers that know frame-ancestors ignore X-Frame-Options; older ones get it where it
    # can say the same (it cannot name other origins).
    pop_frame_options = "SAMEORIGIN" if ancestors == ["'self'"] else None

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        """Set the content, frame and referrer policies of the response."""
        framed = request.blueprint in FRAMED_BLUEPRINTS
        policy = PAGE_POLICY if response.mimetype == "text/html" else OTHER_POLICY
        frame_ancestors = pop_frame_ancestors if framed else "frame-ancestors 'none'"
        frame_options = pop_frame_options if framed else "DENY"
        response.headers["Content-Security-Policy"] = f"{policy}; {frame_ancestors}"
        if frame_options:
            response.headers["X-Frame-Options"] = frame_options
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = REFERRER_POLICY
        return response
