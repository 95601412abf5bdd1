"""Constants the tests share: the test installation's secrets, accounts and known records."""

from __future__ import annotations

import os
from pathlib import Path

PG_URL = os.environ.get("CARRYOVER_TEST_DATABASE_URL")
PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
FIXTURES = PLUGINS_DIR / "zendesk" / "fixtures"
ZENDESK_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
ZENDESK_EMAIL = "bot@example.com"
ZENDESK_TOKEN = "test-token"
# Nothing listens on the discard port: the Zendesk API of tests that do not ask for the fake.
UNREACHABLE_URL = "http://127.0.0.1:9"
AGENT_KEY = "agent-key-for-tests"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
CTI_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GENERIC_SECRET = "whsec_Z2VuZXJpYy1zZWNyZXQtZm9yLXRlc3RzLW9ubHkh"
PUBLIC_URL = "http://127.0.0.1:8080"  # the default public_url, which Twilio signs
ANN = 8447388090501
SF_ORG = "00D70000000IVNp"  # the org of the Salesforce fixtures, in its 15-character form
SF_INSTANCE = "https://acme.my.salesforce.com"
SF_SESSION = "00D70000000IVNp!AQ4AQ.session-for-tests"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
ADMIN_PASSWORD = "correct horse battery"
SHOPIFY_SECRET = "shopify-client-secret-for-tests"
SHOPIFY_SHOP = "acme-test.myshopify.com"
