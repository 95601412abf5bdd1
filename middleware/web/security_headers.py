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

from middleware.installation import Installation

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
    core: Installation = app.extensions["carryover"]
    ancestors = core.config.pop["frame_ancestors"]
    pop_frame_ancestors = "frame-ancestors " + " ".join(ancestors)
    # Browsers that know frame-ancestors ignore X-Frame-Options; older ones get it where it
    # can say the same (it cannot name other origins).
    pop_frame_options = "SAMEORIGIN" if ancestors == ["'self'"] else None

    # Built once: the headers of each kind of response, added without looking for earlier
    # ones (no view sets these), at a few microseconds a webhook instead of tens.
    variants = {
        (framed, page): _headers(
            f"{PAGE_POLICY if page else OTHER_POLICY}; "
            + (pop_frame_ancestors if framed else "frame-ancestors 'none'"),
            pop_frame_options if framed else "DENY",
        )
        for framed in (False, True)
        for page in (False, True)
    }

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        """Set the content, frame and referrer policies of the response."""
        framed = request.blueprint in FRAMED_BLUEPRINTS
        page = (response.content_type or "").startswith("text/html")
        response.headers.extend(variants[framed, page])
        return response


def _headers(content_policy: str, frame_options: str | None) -> list[tuple[str, str]]:
    headers = [("Content-Security-Policy", content_policy)]
    if frame_options:
        headers.append(("X-Frame-Options", frame_options))
    headers += [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", REFERRER_POLICY)]
    return headers
