"""Load and validate the YAML configuration, with ${ENV} interpolation."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml

from middleware.integrations.network import IPNetwork, parse_networks

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# ${NAME} is not plain YAML inside flow collections ("[${KEY}]" parses "{" as a mapping), so
# the file is read with each reference swapped for a token that is, then swapped back.
ENV_TOKEN = "__carryover_env_{}_end__"
ENV_TOKEN_PATTERN = re.compile(r"__carryover_env_([A-Za-z_][A-Za-z0-9_]*?)_end__")
DEFAULT_DATABASE_URL = "sqlite:///var/carryover.db"


def shipped_mappings() -> Path:
    """Return the folder of the mappings shipped with Carryover (the package `mappings`)."""
    # Installed from a wheel or run from a checkout, the package is a folder on disk.
    return Path(str(resources.files("mappings")))


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names the key."""


@dataclass(frozen=True)
class Setting:
    """Declare one configuration key: its type, default and whether it is a secret."""

    type: type
    default: Any = None
    required: bool = False
    secret: bool = False
    doc: str = ""
    # Settable in the configuration file only, never from the admin UI (e.g. a file path:
    # an admin in the browser must not make the server read a file of its choosing).
    file_only: bool = False


def _checked(path: str, value: Any, setting: Setting) -> Any:
    if value is None:
        if setting.required:
            raise ConfigError(f"{path}: required")
        return setting.default
    if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if setting.type is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: expected a list of strings")
        return [v for v in value if v]
    if not isinstance(value, setting.type) or (setting.type is int and isinstance(value, bool)):
        raise ConfigError(f"{path}: expected {setting.type.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan and .inf, or "nan" typed into the admin UI: every timeout or wait
        # taken from such a value fails at its first use.
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{path}: must not be negative")
    return value


def public_url(value: str) -> str:
    """Check public_url, the base of the webhook URLs pasted into each tool; without a final /.

    A path is allowed (a reverse proxy may serve Carryover under one); what a URL to paste
    cannot hold is refused: another scheme, no host, credentials, a query or a fragment.
    """
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    example = "e.g. https://carryover.example.com"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"public_url: expected the http(s) URL the tools reach Carryover at "
                          f"({example}), got {value!r}")  # fmt: skip
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"public_url: expected a base URL with no user, query or fragment "
                          f"({example}), got {value!r}")  # fmt: skip
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ConfigError(f"public_url: the port of {value!r} is not a number") from None
    return url


def validate_section(path: str, raw: Any, schema: Mapping[str, Setting]) -> dict[str, Any]:
    """Check one mapping against its schema and return it with defaults filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key (known: {', '.join(sorted(schema))})")
    return {key: _checked(f"{path}.{key}", raw.get(key), s) for key, s in schema.items()}


TOP_LEVEL = {
    "public_url": Setting(str, "http://127.0.0.1:8080"),
    "database_url": Setting(str, DEFAULT_DATABASE_URL),
    "secret_key": Setting(str, None, secret=True),
    "agent_api_keys": Setting(list, [], secret=True),
    "default_region": Setting(str, "US"),
    "timezone": Setting(str, "UTC"),
    "mappings_dir": Setting(str, None),
    "templates_dir": Setting(str, None),
    "trusted_proxies": Setting(list, []),
    "allow_private_upstreams": Setting(bool, False),
}
SUMMARY = {
    "note_on_first_contact": Setting(bool, False),
    "recent_limit": Setting(int, 10),
    "mood": Setting(bool, True),
}
CALL_NOTES = {"open_days": Setting(int, 30)}
POP = {
    "poll_s": Setting(float, 2.0),
    "stream_s": Setting(float, 300.0),
    "frame_ancestors": Setting(list, ["'self'"]),
}
# A source of CSP's frame-ancestors: scheme://host[:port], the host's first label may be "*".
FRAME_ANCESTOR_PATTERN = re.compile(
    r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:([0-9]{1,5}|\*))?"
)
WORKER = {
    "enabled": Setting(bool, True),
    "poll_interval_s": Setting(float, 1.0),
    "lease_s": Setting(float, 10.0),
    "retry_for_s": Setting(float, 86400.0),
    "max_attempts": Setting(int, 8),
    "backoff_base_s": Setting(float, 2.0),
    "backoff_max_s": Setting(float, 300.0),
    "unknown_outcome_grace_s": Setting(float, 120.0),
    "upstream_pause_max_s": Setting(float, 60.0),
    "upstream_concurrency": Setting(int, 8),
}
# Calls in flight to one upstream at most: each is a worker thread and an open connection.
MAX_UPSTREAM_CONCURRENCY = 128
ADMIN = {
    "idle_timeout_s": Setting(int, 1800),
    "failed_logins_per_username": Setting(int, 5),
    "failed_logins_per_address": Setting(int, 20),
    "failed_login_window_s": Setting(int, 900),
}
SERVER = {
    "host": Setting(str, "127.0.0.1"),
    "port": Setting(int, 8080),
    "threads": Setting(int, 40),
    "connection_limit": Setting(int, 1000),
    "channel_timeout_s": Setting(int, 75),
    "request_timeout_s": Setting(float, 10.0),
    # Several web processes run under gunicorn with gevent: an open screen-pop then costs a
    # greenlet, not a thread, so each process holds thousands (see middleware/web/serving.py).
    "processes": Setting(int, 1),
    "pop_streams": Setting(int, 2500),
}
# How long raw webhook bodies and the timeline are kept (0: for ever); see customers/retention.py.
RETENTION = {
    "deliveries_days": Setting(int, 30),
    "timeline_days": Setting(int, 730),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
LOGGING = {
    "level": Setting(str, "INFO"),
    "format": Setting(str, "text"),
}
METRICS = {
    "enabled": Setting(bool, True),
    # Who may read /metrics without the token: addresses or CIDR networks.
    "allow": Setting(list, ["127.0.0.1/32", "::1/128"]),
    "bearer_token": Setting(str, None, secret=True),
}
SECTIONS = {
    "summary": SUMMARY, "call_notes": CALL_NOTES, "pop": POP, "worker": WORKER, "admin": ADMIN,
    "server": SERVER, "retention": RETENTION, "logging": LOGGING, "metrics": METRICS,
}  # fmt: skip
# Keys that a zero would break (no thread, no connection, every connection closed at once).
POSITIVE = ("server.threads", "server.connection_limit", "server.channel_timeout_s",
            "server.request_timeout_s", "server.processes", "server.pop_streams",
            "worker.upstream_concurrency")  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Hold the validated configuration of one Carryover installation."""

    public_url: str = "http://127.0.0.1:8080"
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str | None = None
    agent_api_keys: tuple[str, ...] = ()
    default_region: str = "US"
    # The IANA time zone notes and pops show times in (agents read local time).
    timezone: str = "UTC"
    # The shipped mappings unless mappings_dir names a folder of the admin's.
    mappings_dir: Path = field(default_factory=shipped_mappings)
    templates_dir: Path | None = None
    # Proxies whose X-Forwarded-For is believed (see middleware/integrations/network.py).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Integrations may call loopback and private addresses (a simulator, a proxy nearby).
    allow_private_upstreams: bool = False
    summary: dict[str, Any] = field(
        default_factory=lambda: validate_section("summary", {}, SUMMARY)
    )
    call_notes: dict[str, Any] = field(
        default_factory=lambda: validate_section("call_notes", {}, CALL_NOTES)
    )
    pop: dict[str, Any] = field(default_factory=lambda: validate_section("pop", {}, POP))
    worker: dict[str, Any] = field(default_factory=lambda: validate_section("worker", {}, WORKER))
    admin: dict[str, Any] = field(default_factory=lambda: validate_section("admin", {}, ADMIN))
    server: dict[str, Any] = field(default_factory=lambda: validate_section("server", {}, SERVER))
    retention: dict[str, Any] = field(
        default_factory=lambda: validate_section("retention", {}, RETENTION)
    )
    logging: dict[str, Any] = field(
        default_factory=lambda: validate_section("logging", {}, LOGGING)
    )
    # metrics.allow holds networks (IPNetwork), read from the strings of the file.
    metrics: dict[str, Any] = field(default_factory=lambda: checked_metrics({}))
    integrations: dict[str, dict[str, Any]] = field(default_factory=dict)


def interpolate(value: Any, path: str = "") -> Any:
    """Replace ${NAME} with the environment variable NAME, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path or 'value'}: environment variable {name} is not set")
            return os.environ[name]

        return ENV_PATTERN.sub(substitute, value)
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def _restore_references(value: Any) -> Any:
    if isinstance(value, str):
        return ENV_TOKEN_PATTERN.sub(lambda m: "${" + m.group(1) + "}", value)
    if isinstance(value, list):
        return [_restore_references(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore_references(v) for k, v in value.items()}
    return value


def check_timezone(name: str) -> str:
    """Return an IANA time zone name that zoneinfo knows; raise ConfigError otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"timezone: {name!r} is not an IANA time zone name (e.g. UTC, Europe/Rome, "
            "America/New_York)"
        ) from None
    return name


def check_listener(host: str, port: int, where: str) -> None:
    """Check the address `carryover serve` listens on; raise ConfigError naming the key."""
    if not host.strip() or any(c.isspace() for c in host) or "/" in host:
        raise ConfigError(f"{where}host: expected an address or name to listen on (127.0.0.1, "
                          f"0.0.0.0, ::), got {host!r}")  # fmt: skip
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}port: expected a port from 1 to 65535, got {port}")


def frame_ancestor(path: str, value: str) -> str:
    """Check one source of pop.frame_ancestors: 'self' or scheme://host[:port]."""
    if value in ("self", "'self'"):  # YAML reads ['self'] as the bare word self
        return "'self'"
    source = value.removesuffix("/")
    if not FRAME_ANCESTOR_PATTERN.fullmatch(source):
        raise ConfigError(
            f"{path}: {value!r} is not self or scheme://host (e.g. https://flex.twilio.com, "
            "https://*.lightning.force.com)"
        )
    return source


def checked_logging(section: dict[str, Any]) -> dict[str, Any]:
    """Check the logging section: a level the logging module knows, text or json."""
    level = section["level"].strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"logging.level: {section['level']!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    if section["format"] not in LOG_FORMATS:
        raise ConfigError(
            f"logging.format: {section['format']!r} is not one of {', '.join(LOG_FORMATS)}"
        )
    return {**section, "level": level}


def checked_metrics(raw: Any) -> dict[str, Any]:
    """Check the metrics section; its allow list becomes networks."""
    section = validate_section("metrics", raw, METRICS)
    try:
        allow = parse_networks(section["allow"], "metrics.allow")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if section["bearer_token"] is not None and not section["bearer_token"].strip():
        raise ConfigError("metrics.bearer_token: empty (leave it out for no token)")
    return {**section, "allow": allow}


def parse_config(raw: Any, plugin_schemas: Mapping[str, Mapping[str, Setting]]) -> Config:
    """Validate a raw configuration mapping; plugin_schemas gives each integration's keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("configuration: expected a mapping at the top level")
    raw = interpolate(raw)
    known = set(TOP_LEVEL) | set(SECTIONS) | {"integrations"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    top = {key: _checked(key, raw.get(key), s) for key, s in TOP_LEVEL.items()}
    region = top["default_region"].upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"default_region: {top['default_region']!r} is not a region code")
    timezone = check_timezone(top["timezone"])
    if not top["database_url"].startswith(("sqlite:", "postgresql")):
        raise ConfigError("database_url: expected sqlite:///PATH or postgresql+psycopg://…")

    integrations_raw = raw.get("integrations") or {}
    if not isinstance(integrations_raw, dict):
        raise ConfigError("integrations: expected a mapping")
    integrations = {}
    for key, section in integrations_raw.items():
        if key not in plugin_schemas:
            known_plugins = ", ".join(sorted(plugin_schemas)) or "none installed"
            raise ConfigError(f"integrations.{key}: unknown integration (known: {known_plugins})")
        integrations[key] = validate_section(f"integrations.{key}", section, plugin_schemas[key])

    try:
        trusted_proxies = parse_networks(top["trusted_proxies"], "trusted_proxies")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sections = {name: validate_section(name, raw.get(name), s) for name, s in SECTIONS.items()}
    sections["logging"] = checked_logging(sections["logging"])
    sections["metrics"] = checked_metrics(raw.get("metrics"))
    for path in POSITIVE:
        name, _, key = path.partition(".")
        if not sections[name][key] > 0:
            raise ConfigError(f"{path}: must be greater than 0")
    if sections["worker"]["upstream_concurrency"] > MAX_UPSTREAM_CONCURRENCY:
        raise ConfigError(f"worker.upstream_concurrency: at most {MAX_UPSTREAM_CONCURRENCY}")
    check_listener(sections["server"]["host"], sections["server"]["port"], "server.")
    ancestors = sections["pop"]["frame_ancestors"]
    if not ancestors:
        raise ConfigError("pop.frame_ancestors: list at least one source (self: only Carryover)")
    sections["pop"]["frame_ancestors"] = [
        frame_ancestor(f"pop.frame_ancestors[{i}]", v) for i, v in enumerate(ancestors)
    ]
    mappings_dir = top["mappings_dir"]
    templates_dir = top["templates_dir"]
    return Config(
        public_url=public_url(top["public_url"]),
        database_url=top["database_url"],
        secret_key=top["secret_key"],
        agent_api_keys=tuple(top["agent_api_keys"]),
        default_region=region,
        timezone=timezone,
        trusted_proxies=trusted_proxies,
        allow_private_upstreams=top["allow_private_upstreams"],
        mappings_dir=Path(mappings_dir) if mappings_dir else shipped_mappings(),
        templates_dir=Path(templates_dir) if templates_dir else None,
        integrations=integrations,
        **sections,
    )


def config_path(explicit: str | None) -> Path | None:
    """Pick the config file: --config, else $CARRYOVER_CONFIG, else ./config.yaml if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get("CARRYOVER_CONFIG"):
        return Path(os.environ["CARRYOVER_CONFIG"])
    default = Path("config.yaml")
    return default if default.exists() else None


def load_config(path: Path | None, plugin_schemas: Mapping[str, Mapping[str, Setting]]) -> Config:
    """Read and validate the configuration file, or return the built-in defaults."""
    if path is None:
        return parse_config({}, plugin_schemas)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(ENV_PATTERN.sub(lambda m: ENV_TOKEN.format(m.group(1)), text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return parse_config(_restore_references(raw), plugin_schemas)
