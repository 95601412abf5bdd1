"""Serve a bare Flask app under the same waitress settings as `carryover serve`.

It is the baseline of the ingest benchmarks: endpoints at the same paths that read the
body and answer 200 with the same reply, so the only difference from Carryover is what
Carryover does.
"""

from __future__ import annotations

import argparse

import waitress
from flask import Flask, Response, request

from middleware.cli import build_parser
from plugins.salesforce.outbound import ACK

# Carryover's own default, read from its command line so the two servers cannot drift apart.
SERVE_DEFAULTS = build_parser().parse_args(["serve"])


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
    parser.add_argument("--threads", type=int, default=SERVE_DEFAULTS.threads)
    args = parser.parse_args()
    print(f"bare: serving on http://{args.host}:{args.port}", flush=True)
    # The same call as middleware/cli.py cmd_serve: same threads, same waitress defaults.
    waitress.serve(create_bare_app(), host=args.host, port=args.port, threads=args.threads,
                   ident="carryover")  # fmt: skip


if __name__ == "__main__":
    main()
