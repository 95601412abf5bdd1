"""Serve a bare Flask app under the same waitress server and settings as `carryover serve`.

It is the baseline of the ingest benchmarks: endpoints at the same paths that read the
body and answer 200 with the same reply, so the only difference from Carryover is what
Carryover does.
"""

from __future__ import annotations

import argparse

from flask import Flask, Response, request

from middleware.cli import build_parser
from middleware.config import SERVER, validate_section
from middleware.web.serving import serve
from plugins.salesforce.outbound import ACK

# Carryover's own defaults, read from its command line and configuration schema so the two
# servers cannot drift apart.
SERVE_DEFAULTS = build_parser().parse_args(["serve"])
SERVER_DEFAULTS = validate_section("server", {}, SERVER)


def create_bare_app() -> Flask:
    """Build a Flask app with POST /hooks/zendesk and /hooks/salesforce, each answering 200."""
    app = Flask(__name__)

    @app.post("/hooks/zendesk")
    def receive() -> Response:
        """Read the body and acknowledge it, as Carryover does, without storing anything."""
        request.get_data(cache=False)
        return Response(b"{}", status=200, content_type="application/json")

    @app.post("/hooks/salesforce")
    def receive_salesforce() -> Response:
        """Read the Outbound Message and answer Carryover's own SOAP Ack, storing nothing."""
        request.get_data(cache=False)
        return Response(ACK, status=200, content_type="text/xml; charset=utf-8")

    return app


def main() -> None:
    """Serve the bare app until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=SERVE_DEFAULTS.host)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=SERVER_DEFAULTS["threads"])
    args = parser.parse_args()
    print(f"bare: serving on http://{args.host}:{args.port}", flush=True)
    # The same call as middleware/cli.py cmd_serve: same server, same default settings.
    serve(create_bare_app(), {**SERVER_DEFAULTS, "threads": args.threads}, args.host, args.port)


if __name__ == "__main__":
    main()
