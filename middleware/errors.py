"""The errors plugins raise; the hook endpoint turns each into its one HTTP answer."""


class InboundError(Exception):
    """Base of the errors an inbound delivery can meet before it is stored."""

    status = 400
    # Why it was refused, as a short stable category that admins see counted with what to
    # check (see middleware/ingest/refusals.py); the message stays the sender's answer.
    reason = "malformed"


class InvalidSignature(InboundError):
    """The delivery is not authentic: bad, missing or stale signature (401).

    `reason` names the check that failed (a key of refusals.REASONS, e.g. "signature",
    "timestamp", "organization"); the message is the 401's body, unchanged by it.
    """

    status = 401

    def __init__(self, message: str, reason: str = "signature") -> None:
        super().__init__(message)
        self.reason = reason


class MalformedPayload(InboundError):
    """The body cannot be parsed or lacks what it must carry (400)."""

    status = 400


class TryLater(InboundError):
    """The delivery cannot be checked now (an upstream it is checked against is down) (503)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedEvent(InboundError):
    """An authentic event of a type Carryover does not use (200, ignored)."""

    status = 200

    def __init__(self, event_type: str) -> None:
        super().__init__(event_type)
        self.event_type = event_type


class UpstreamError(Exception):
    """An upstream API call failed; the work is retried with backoff.

    For a write, this alone says nothing of whether the upstream applied it: an answer that
    never came (a read timeout, a dropped connection, a 500 or 504) is not a "no".
    """


class NotApplied(UpstreamError):
    """The upstream did not act on the call (no connection made, 503, paused); retry freely."""


class RateLimited(NotApplied):
    """The upstream asked us to slow down; retry after the given number of seconds."""

    def __init__(self, retry_after: float, detail: str = "rate limited") -> None:
        super().__init__(f"{detail}; retry after {retry_after:g}s")
        self.retry_after = retry_after


class UpstreamPaused(RateLimited):
    """The call was not sent: the upstream is paused for every process (see upstreams.py)."""


class PermanentUpstreamError(UpstreamError):
    """An upstream refused the request for good (e.g. 404, 422); no retry helps."""
