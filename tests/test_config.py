"""Configuration: defaults, ${ENV} interpolation, and errors that name the key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from middleware.cli import main
from middleware.config import (
    DEFAULT_DATABASE_URL,
    Config,
    ConfigError,
    config_path,
    load_config,
    parse_config,
)
from middleware.integrations.registry import PluginRegistry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
ZENDESK = {
    "url": "https://acme.zendesk.com",
    "email": "bot@example.com",
    "api_token": "token",
    "webhook_secret": "secret",
}
# The keys of the smallest complete configuration (store, secrets, agent keys, region and
# one integration), as dotted paths.
PRODUCT_KEYS = [
    "public_url", "database_url", "secret_key", "agent_api_keys", "default_region",
    "integrations", "integrations.zendesk.url", "integrations.zendesk.email",
    "integrations.zendesk.api_token", "integrations.zendesk.webhook_secret",
]  # fmt: skip
EXAMPLE_ENV = {
    "CARRYOVER_SECRET_KEY": "example-secret",
    "CARRYOVER_AGENT_KEY": "example-agent-key",
    "ZENDESK_API_TOKEN": "example-token",
    "TWILIO_AUTH_TOKEN": "example-twilio-token",
    "CTI_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "PLACETEL_SECRET": "example-placetel-secret",
    "PLACETEL_TOKEN": "example-placetel-path-token",
    "GENERIC_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "ZENDESK_WEBHOOK_SECRET": "example-webhook-secret",
    "SF_SESSION": "00D000000000001!example-session",
    "SF_PASSWORD": "example-password",
    "SF_SECURITY_TOKEN": "example-security-token",
    "SF_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----",
    "SIPGATE_PATH_TOKEN": "example-sipgate-path-token",
    "SHOPIFY_WEBHOOK_SECRET": "example-shopify-secret",
}


@pytest.fixture
def schemas():
    """Return the settings schemas of every installed plugin."""
    return PluginRegistry.from_entry_points().schemas()


def write(tmp_path: Path, text: str) -> Path:
    """Write a config file and return its path."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_the_built_in_defaults(schemas):
    """Without a file: embedded SQLite, region US, no integrations, default worker settings."""
    config = load_config(None, schemas)
    assert config.database_url == DEFAULT_DATABASE_URL == "sqlite:///var/carryover.db"
    assert config.public_url == "http://127.0.0.1:8080"
    assert config.default_region == "US"
    assert config.agent_api_keys == ()
    assert config.secret_key is None
    assert config.integrations == {}
    assert config.summary == {"note_on_first_contact": False, "recent_limit": 10, "mood": True}
    assert config.call_notes == {"open_days": 30}
    assert config.worker["lease_s"] == 10.0
    assert config.worker["retry_for_s"] == 86400.0
    assert config.worker["max_attempts"] == 8
    assert config == Config()


def test_empty_file_gives_the_built_in_defaults(tmp_path, schemas):
    """An empty YAML file is the same as no file."""
    assert load_config(write(tmp_path, ""), schemas) == Config()


def test_config_path_prefers_the_flag_then_the_environment_then_config_yaml(tmp_path, monkeypatch):
    """--config wins over $CARRYOVER_CONFIG, which wins over ./config.yaml; else no file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARRYOVER_CONFIG", raising=False)
    assert config_path(None) is None
    (tmp_path / "config.yaml").write_text("{}")
    assert config_path(None) == Path("config.yaml")
    monkeypatch.setenv("CARRYOVER_CONFIG", "/etc/carryover.yaml")
    assert config_path(None) == Path("/etc/carryover.yaml")
    assert config_path("other.yaml") == Path("other.yaml")


def test_env_references_are_replaced(tmp_path, schemas, monkeypatch):
    """${NAME} in any value, inside lists and integration sections too, is the env variable."""
    monkeypatch.setenv("CO_TEST_SECRET", "s3cret")
    monkeypatch.setenv("CO_TEST_KEY", "agent-1")
    monkeypatch.setenv("CO_TEST_HOST", "zendesk.example.com")
    monkeypatch.setenv("CO_TEST_WEBHOOK", "whsec")
    path = write(
        tmp_path,
        """
secret_key: ${CO_TEST_SECRET}
agent_api_keys: [${CO_TEST_KEY}, static-key]
integrations:
  zendesk:
    url: https://${CO_TEST_HOST}/
    email: bot@example.com
    api_token: tok-${CO_TEST_SECRET}-end
    webhook_secret: ${CO_TEST_WEBHOOK}
""",
    )
    config = load_config(path, schemas)
    assert config.secret_key == "s3cret"
    assert config.agent_api_keys == ("agent-1", "static-key")
    assert config.integrations["zendesk"]["url"] == "https://zendesk.example.com/"
    assert config.integrations["zendesk"]["api_token"] == "tok-s3cret-end"
    assert config.integrations["zendesk"]["webhook_secret"] == "whsec"


def test_the_product_contract_example_parses_as_written(tmp_path, schemas, monkeypatch):
    """The smallest complete configuration, with unquoted ${NAME} in a list, is valid."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    path = write(
        tmp_path,
        """\
public_url: https://carryover.example.com   # the base URL that senders call (Twilio signs it)
database_url: sqlite:///var/carryover.db     # or postgresql+psycopg://user:pw@host/db
secret_key: ${CARRYOVER_SECRET_KEY}
agent_api_keys: [${CARRYOVER_AGENT_KEY}]    # for the agent-facing reads (context API, pop)
default_region: US                          # for phone numbers written without a country code
integrations:
  zendesk:
    url: https://acme.zendesk.com           # any base URL: a sandbox, a proxy, or http://127.0.0.1:PORT
    email: bot@acme.com
    api_token: ${ZENDESK_API_TOKEN}
    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}
""",  # noqa: E501
    )
    config = load_config(path, schemas)
    assert config.agent_api_keys == ("example-agent-key",)
    assert config.secret_key == "example-secret"
    assert config.integrations["zendesk"]["webhook_secret"] == "example-webhook-secret"


def test_env_value_with_yaml_syntax_is_taken_literally(tmp_path, schemas, monkeypatch):
    """A secret containing '#', ': ' or quotes is used as is, not read as YAML."""
    monkeypatch.setenv("CO_TEST_SECRET", "a#b: 'c\" [d]")
    path = write(tmp_path, "secret_key: ${CO_TEST_SECRET}\nagent_api_keys: [${CO_TEST_SECRET}]\n")
    config = load_config(path, schemas)
    assert config.secret_key == "a#b: 'c\" [d]"
    assert config.agent_api_keys == ("a#b: 'c\" [d]",)


def test_missing_env_variable_is_an_error_naming_it_and_the_key(tmp_path, schemas, monkeypatch):
    """A ${NAME} whose variable is not set stops the start, naming the variable and the key."""
    monkeypatch.delenv("CO_TEST_UNSET", raising=False)
    raw = {"integrations": {"zendesk": {**ZENDESK, "api_token": "${CO_TEST_UNSET}"}}}
    with pytest.raises(ConfigError) as error:
        parse_config(raw, schemas)
    assert "CO_TEST_UNSET" in str(error.value)
    assert "integrations.zendesk.api_token" in str(error.value)


def test_text_that_only_looks_like_a_reference_is_kept(schemas):
    """Only ${NAME} is a reference: $NAME and ${} stay as written."""
    config = parse_config({"secret_key": "$HOME-${}-x"}, schemas)
    assert config.secret_key == "$HOME-${}-x"


def test_unknown_top_level_key_is_an_error_naming_it(schemas):
    """A misspelt top-level key stops the start with a message naming it."""
    with pytest.raises(ConfigError, match=r"^databse_url: unknown key"):
        parse_config({"databse_url": "sqlite:///x.db"}, schemas)


def test_unknown_key_in_a_section_is_an_error_naming_its_path(schemas):
    """A misspelt key inside worker or summary is named with its section."""
    with pytest.raises(ConfigError, match=r"^worker\.lease: unknown key"):
        parse_config({"worker": {"lease": 30}}, schemas)
    with pytest.raises(ConfigError, match=r"^summary\.note_on_first: unknown key"):
        parse_config({"summary": {"note_on_first": True}}, schemas)


def test_unknown_key_in_the_zendesk_section_is_an_error_naming_its_path(schemas):
    """A misspelt Zendesk setting is named as integrations.zendesk.<key>."""
    raw = {"integrations": {"zendesk": {**ZENDESK, "webhook_secert": "x"}}}
    with pytest.raises(ConfigError, match=r"^integrations\.zendesk\.webhook_secert: unknown key"):
        parse_config(raw, schemas)


def test_missing_required_zendesk_setting_is_an_error_naming_it(schemas):
    """A Zendesk section without its webhook secret names integrations.zendesk.webhook_secret."""
    raw = {"integrations": {"zendesk": {k: v for k, v in ZENDESK.items() if k != "webhook_secret"}}}
    with pytest.raises(ConfigError, match=r"^integrations\.zendesk\.webhook_secret: required"):
        parse_config(raw, schemas)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"worker": {"lease_s": "abc"}}, "worker.lease_s"),
        ({"worker": {"max_attempts": 2.5}}, "worker.max_attempts"),
        ({"worker": {"max_attempts": True}}, "worker.max_attempts"),
        ({"worker": {"enabled": "yes please"}}, "worker.enabled"),
        ({"worker": {"backoff_base_s": -1}}, "worker.backoff_base_s"),
        ({"worker": ["lease_s"]}, "worker"),
        ({"summary": {"recent_limit": "10"}}, "summary.recent_limit"),
        ({"summary": {"mood": "off"}}, "summary.mood"),
        ({"call_notes": {"open_days": None, "extra": 1}}, "call_notes.extra"),
        ({"public_url": 8080}, "public_url"),
        ({"agent_api_keys": "one-key"}, "agent_api_keys"),
        ({"agent_api_keys": [1, 2]}, "agent_api_keys"),
        ({"default_region": "Atlantis"}, "default_region"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"database_url": "mysql://localhost/carryover"}, "database_url"),
        ({"integrations": ["zendesk"]}, "integrations"),
        ({"integrations": {"zendesk": "on"}}, "integrations.zendesk"),
        ({"integrations": {"zendesk": {**ZENDESK, "timeout_s": "fast"}}},
         "integrations.zendesk.timeout_s"),
        ({"integrations": {"zendesk": {**ZENDESK, "signature_tolerance_s": -5}}},
         "integrations.zendesk.signature_tolerance_s"),
        ({"integrations": {"zendesk": {**ZENDESK, "timeout_s": float("nan")}}},
         "integrations.zendesk.timeout_s"),
        ({"worker": {"lease_s": float("inf")}}, "worker.lease_s"),
    ],
)  # fmt: skip
def test_bad_value_is_an_error_naming_the_key(schemas, raw, named):
    """A value of the wrong type or range stops the start with a message naming its key."""
    with pytest.raises(ConfigError) as error:
        parse_config(raw, schemas)
    assert str(error.value).startswith(named + ":"), str(error.value)


def test_whole_numbers_are_accepted_where_seconds_are_floats(schemas):
    """lease_s: 30 is read as 30.0 seconds."""
    assert parse_config({"worker": {"lease_s": 30}}, schemas).worker["lease_s"] == 30.0


def test_unknown_integration_is_an_error_naming_it_and_the_known_ones(schemas):
    """An integration no installed plugin provides is refused, listing what is installed."""
    with pytest.raises(ConfigError) as error:
        parse_config({"integrations": {"zendsek": ZENDESK}}, schemas)
    message = str(error.value)
    assert message.startswith("integrations.zendsek: unknown integration")
    assert "zendesk" in message.split("known:")[1]


def test_top_level_must_be_a_mapping(tmp_path, schemas):
    """A file holding a list instead of a mapping is refused."""
    with pytest.raises(ConfigError, match="top level"):
        load_config(write(tmp_path, "- public_url\n"), schemas)


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path, schemas):
    """A YAML syntax error names the file."""
    path = write(tmp_path, "worker: {lease_s: 30\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path, schemas)


def test_unreadable_file_is_an_error_naming_it(tmp_path, schemas):
    """A --config that does not exist names the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(missing, schemas)


def test_region_is_case_insensitive_and_public_url_loses_its_trailing_slash(schemas):
    """default_region: gb is GB, and public_url is kept without a trailing slash."""
    config = parse_config(
        {"default_region": "gb", "public_url": "https://carryover.example.com/"}, schemas
    )
    assert config.default_region == "GB"
    assert config.public_url == "https://carryover.example.com"


def test_config_example_parses_with_its_env_variables_set(schemas, monkeypatch):
    """config.example.yaml, as shipped, is a valid configuration."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(EXAMPLE, schemas)
    assert config.database_url == DEFAULT_DATABASE_URL
    assert config.integrations == {}


def uncommented_example() -> str:
    """Return config.example.yaml with every commented-out key switched on."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("integrations: {}", "integrations:")
    lines = []
    for line in text.splitlines():
        # "# key: value" at the top level, "#  key: value" for a key nested two deep.
        match = re.match(r"^#(?: (?=\S))?(\s*[a-z_]+:(?:\s.*)?)$", line)
        lines.append(match.group(1) if match else line)
    return "\n".join(lines) + "\n"


def test_config_example_with_every_commented_key_switched_on_is_valid(
    tmp_path, schemas, monkeypatch
):
    """Uncommenting the documented keys (Zendesk included) gives a valid configuration."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    text = uncommented_example()
    assert "\nintegrations:\n  zendesk:\n" in text
    config = load_config(write(tmp_path, text), schemas)
    assert config.secret_key == "example-secret"
    assert "example-agent-key" in config.agent_api_keys
    zendesk = config.integrations["zendesk"]
    assert zendesk["api_token"] == "example-token"
    assert zendesk["webhook_secret"] == "example-webhook-secret"


def test_config_example_documents_every_key_of_the_product_contract_and_the_schemas(schemas):
    """Every key of the smallest configuration and of every settings schema is in the example."""
    from middleware.config import SECTIONS, TOP_LEVEL

    data = yaml.safe_load(re.sub(r"\$\{\w+\}", "from-env", uncommented_example()))
    present = set()

    def walk(node, prefix=""):
        for key, value in node.items():
            present.add(prefix + key)
            if isinstance(value, dict):
                walk(value, prefix + key + ".")

    walk(data)
    expected = set(PRODUCT_KEYS) | set(TOP_LEVEL)
    expected |= {f"{name}.{key}" for name, schema in SECTIONS.items() for key in schema}
    expected |= {f"integrations.{p}.{k}" for p, schema in schemas.items() for k in schema}
    assert sorted(expected - present) == []


def test_secret_settings_are_marked(schemas):
    """Every plugin marks its credentials and webhook secret as secret settings."""
    for plugin, schema in schemas.items():
        secret = {key for key, setting in schema.items() if setting.secret}
        assert secret, plugin
    assert {"api_token", "webhook_secret"} <= {k for k, s in schemas["zendesk"].items() if s.secret}


def test_cli_with_a_bad_config_exits_non_zero_naming_the_key(tmp_path, capsys):
    """`carryover db upgrade` with a bad value exits 2 and names the key on stderr."""
    path = write(tmp_path, "worker:\n  lease_s: abc\n")
    code = main(["db", "upgrade", "--config", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "worker.lease_s" in captured.err
    assert "configuration error" in captured.err
    assert captured.out == ""


def test_cli_with_an_unknown_key_exits_non_zero_in_a_real_process(tmp_path):
    """The installed `carryover` command refuses an unknown key with a message, not a trace."""
    path = write(tmp_path, "integrations:\n  zendesk:\n    colour: blue\n")
    result = subprocess.run(
        [sys.executable, "-m", "middleware.cli", "worker", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "integrations.zendesk.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_with_a_missing_env_variable_exits_non_zero_naming_it(tmp_path, capsys, monkeypatch):
    """A config referring to an unset variable stops the command, naming the variable."""
    monkeypatch.delenv("CO_TEST_UNSET", raising=False)
    path = write(tmp_path, "secret_key: ${CO_TEST_UNSET}\n")
    assert main(["worker", "--config", str(path)]) == 2
    assert "CO_TEST_UNSET" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key",
    [
        "threads",
        "connection_limit",
        "channel_timeout_s",
        "request_timeout_s",
        "processes",
        "pop_streams",
    ],
)
def test_server_settings_of_zero_are_refused(schemas, key):
    """A server setting of 0 (no thread, no connection, every request late) stops the start."""
    with pytest.raises(ConfigError, match=rf"^server\.{key}: must be greater than 0$"):
        parse_config({"server": {key: 0}}, schemas)


def test_pop_frame_ancestors_are_normalised(schemas):
    """self (as YAML reads ['self']) becomes 'self', and a trailing slash is dropped."""
    config = parse_config(
        {"pop": {"frame_ancestors": ["self", "https://flex.twilio.com/",
                                     "https://*.lightning.force.com", "http://pbx.local:8080"]}},
        schemas,
    )  # fmt: skip
    assert config.pop["frame_ancestors"] == [
        "'self'", "https://flex.twilio.com", "https://*.lightning.force.com",
        "http://pbx.local:8080",
    ]  # fmt: skip
    assert Config().pop["frame_ancestors"] == ["'self'"]


@pytest.mark.parametrize(
    "source",
    [
        "https://flex.twilio.com; script-src *",  # would add a directive
        "https://flex.twilio.com https://evil.example.com",  # would add a source
        "'unsafe-inline'",
        "'none'",
        "*",
        "https:",  # any site at all
        "flex.twilio.com",  # no scheme
        "https://flex.twilio.com/agent",  # a path
        "javascript:alert(1)",
    ],
)
def test_pop_frame_ancestors_refuse_anything_but_self_or_scheme_and_host(schemas, source):
    """A frame-ancestors source that is not self or scheme://host stops the start."""
    with pytest.raises(ConfigError, match=r"^pop\.frame_ancestors\[1\]: .* is not self or"):
        parse_config({"pop": {"frame_ancestors": ["self", source]}}, schemas)


def test_pop_frame_ancestors_must_not_be_empty(schemas):
    """An empty list (which would read as frame-ancestors 'none') is refused with a hint."""
    with pytest.raises(ConfigError, match=r"^pop\.frame_ancestors: list at least one source"):
        parse_config({"pop": {"frame_ancestors": []}}, schemas)


def test_timezone_defaults_to_utc_and_takes_an_iana_name(schemas):
    """timezone: UTC unless set; an IANA name is kept as given."""
    assert parse_config({}, schemas).timezone == "UTC"
    assert parse_config({"timezone": "Europe/Rome"}, schemas).timezone == "Europe/Rome"


def test_a_command_on_a_store_never_migrated_says_how_to_migrate_it(tmp_path, capsys):
    """`carryover deliveries …` or `admin …` on a new, empty store: the fix in words, not a
    traceback."""
    from middleware.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'empty.db'}\n")
    for command in (["deliveries", "list"], ["deliveries", "replay", "in:1"], ["admin", "list"],
                    ["admin", "remove", "--username", "ada"]):  # fmt: skip
        assert main([*command, "--config", str(config)]) == 2
        assert "run `carryover db upgrade`" in capsys.readouterr().err


def test_the_version_is_the_installed_one(capsys):
    """`carryover --version` says which version runs, as pip knows it."""
    from importlib.metadata import version

    from middleware.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"carryover {version('carryover')}"


@pytest.mark.parametrize(
    "value", ["acme.example.com", "ftp://x", "https://", "https://user:pw@example.com",
              "https://example.com/?a=1", "https://example.com/#top", "https://example.com:http"],
)  # fmt: skip
def test_a_public_url_that_cannot_be_pasted_into_a_tool_is_refused(value, schemas):
    """public_url is the base of each webhook URL: a scheme, a host, at most a path."""
    with pytest.raises(ConfigError, match="public_url"):
        parse_config({"public_url": value}, schemas)


def test_a_public_url_keeps_its_path_without_the_final_slash(schemas):
    config = parse_config({"public_url": " https://example.com/carryover/ "}, schemas)
    assert config.public_url == "https://example.com/carryover"
