"""Network addresses: who is calling (behind trusted proxies), and whom Carryover may call.

Inbound, the address of a request is the peer's, unless the peer is one of the configured
`trusted_proxies`: then it is the nearest address in X-Forwarded-For that is not a trusted
proxy, since only those proxies' additions can be believed.

Outbound, an integration's base URL is chosen by an admin (possibly in the browser) and then
called with the integration's credentials. A URL must be http(s) without credentials in it,
and must never reach link-local or cloud-metadata addresses (where a server's own cloud
credentials are served); loopback and private networks only when `allow_private_upstreams`
is on, since a local simulator, a sandbox or a proxy in the same network can be legitimate.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from middleware.errors import PermanentUpstreamError

if TYPE_CHECKING:
    from middleware.integrations.upstreams import UpstreamHealth

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services outside the link-local ranges, by address and by name.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
RESOLVED_FOR_S = 60.0  # how long a host's addresses are trusted before looking again
MAX_FORWARDED_HOPS = 20


class UpstreamRefused(PermanentUpstreamError):
    """An upstream URL is outside what Carryover may call; the message says why.

    Met at call time it is a permanent failure of that call (no retry makes the address
    allowed); met in a setting, the plugin reports it as a ConfigError naming the key.
    """


def parse_networks(values: Iterable[str], where: str) -> tuple[IPNetwork, ...]:
    """Read CIDR networks (or single addresses); raise ValueError naming the bad entry."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an address or network (CIDR)") from None
    return tuple(found)


def parse_address(value: str | None) -> IPAddress | None:
    """Read an IP address, IPv4-mapped IPv6 as IPv4; None when it is not one."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(address: str | None, networks: Sequence[IPNetwork]) -> bool:
    """Tell whether an address lies in any of the networks."""
    if not networks:
        return False  # the common case, decided without parsing the address
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted_proxies: Sequence[IPNetwork]) -> str:  # fmt: skip
    """Return the address of the client: the peer, or what trusted proxies say it was."""
    address = peer or ""
    if not forwarded_for or not within(address, trusted_proxies):
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        if parse_address(hop) is None:
            return address  # an unreadable hop: believe nothing before it
        address = hop
        if not within(hop, trusted_proxies):
            break
    return address


def _forbidden(address: IPAddress, allow_private: bool) -> str | None:
    """Say why an upstream address may not be called, or None."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata is served)"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not an address of a server"
    if not allow_private and (address.is_loopback or address.is_private):
        kind = "a loopback" if address.is_loopback else "a private"
        return f"{kind} address (set allow_private_upstreams: true to allow it)"
    return None


def check_url(url: str, allow_private: bool, where: str) -> None:
    """Refuse an upstream URL by its form and literal host (no lookup); UpstreamRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamRefused(f"{where}: {_not_a_web_address(url)}")
    if "@" in parts.netloc:
        raise UpstreamRefused(f"{where}: credentials do not belong in the URL")
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise UpstreamRefused(f"{where}: the port of {url!r} is not a number") from None
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise UpstreamRefused(f"{where}: {host} is a cloud metadata service")
    literal = parse_address(host)
    if literal is not None:
        reason = _forbidden(literal, allow_private)
        if reason:
            raise UpstreamRefused(f"{where}: {host} is {reason}")


def _not_a_web_address(url: str) -> str:
    """Say what is wrong with a URL that is not http(s)://host…, and how to write it."""
    if "://" not in url:
        host = url.strip().lstrip("/")
        if not host:
            return "a URL is required, such as https://acme.example.com"
        return f"{url!r} lacks its scheme: write https://{host}"
    scheme = url.split("://", 1)[0]
    if scheme.lower() not in ("http", "https"):
        return f"{url!r} is not a web address: only http:// and https:// URLs can be called"
    return f"{url!r} has no host name: write it as https://host, such as https://acme.example.com"


class UpstreamGuard:
    """Check, before each upstream call, that the URL's host resolves to allowed addresses.

    A name is looked up again after RESOLVED_FOR_S, so a host whose DNS answer changes to
    a forbidden address (DNS rebinding) is refused within that time. Once attached to the
    installation's UpstreamHealth, a call to a paused upstream is not sent either, and each
    call's outcome pauses or resumes the upstream for every process.
    """

    def __init__(self, allow_private: bool, target: str = "", title: str = "") -> None:
        self.allow_private = allow_private
        self.target = target
        self.title = title or target
        self.health: UpstreamHealth | None = None
        self._verdicts: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def check(self, url: str) -> None:
        """Raise UpstreamRefused unless the URL may be called now, UpstreamPaused while paused."""
        check_url(url, self.allow_private, "upstream URL")
        if self.health is not None:
            self.health.check(self.target, self.title)
        self._check_host(url)

    def rate_limited(self, retry_after: float, detail: str) -> None:
        """Pause the upstream until Retry-After: it refused the call for its rate limit."""
        if self.health is not None:
            self.health.rate_limited(self.target, retry_after, detail)

    def failed(self, detail: str) -> None:
        """Count a failure that says the upstream is unwell (5xx, timeout, no connection)."""
        if self.health is not None:
            self.health.failed(self.target, detail)

    def counted(self, status: str) -> None:
        """Count a call made, by the HTTP status it got (or that it got none)."""
        if self.health is not None:
            self.health.count_call(self.target, status)

    def refused(self, detail: str) -> None:
        """Record an answer that refuses the credentials (401): no pause, but not well."""
        if self.health is not None:
            self.health.refused(self.target, detail)

    def answered(self) -> None:
        """Note an answer that says the upstream is well (2xx to 4xx other than 429)."""
        if self.health is not None:
            self.health.succeeded(self.target)

    def _check_host(self, url: str) -> None:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        if parse_address(host) is not None:
            return
        now = time.monotonic()
        with self._lock:
            cached = self._verdicts.get(host)
        if cached is None or now - cached[0] > RESOLVED_FOR_S:
            cached = (now, self._verdict(host))
            with self._lock:
                self._verdicts[host] = cached
        if cached[1]:
            raise UpstreamRefused(f"upstream URL: {host} {cached[1]}")

    def _verdict(self, host: str) -> str | None:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return None  # not resolvable: the call itself fails with a clear error
        for info in infos:
            address = parse_address(str(info[4][0]))
            reason = _forbidden(address, self.allow_private) if address else None
            if reason:
                return f"resolves to {address}, {reason}"
        return None
