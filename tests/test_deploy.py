"""The examples in deploy/ hold together: they parse, and name only what Carryover has.

Every command they run is parsed by the real `carryover` command line, the configuration by
the real configuration parser, the systemd units by configparser (and by systemd-analyze
where it is installed), the compose file as YAML whose environment feeds the configuration.
"""

from __future__ import annotations

import argparse
import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.cli import build_parser, cmd_db_upgrade, cmd_serve, cmd_worker
from middleware.config import ENV_PATTERN, Config, load_config
from middleware.integrations.registry import PluginRegistry

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
RUNNING = {"web": cmd_serve, "worker": cmd_worker}  # the long-running processes
PROCFILE_LINE = re.compile(r"(?P<name>[A-Za-z0-9_-]+):[ \t]*(?P<command>\S.*)")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


def carryover_args(argv: list[str]) -> argparse.Namespace:
    """Parse a `carryover …` command line with the real parser; fail naming what it refused."""
    assert Path(argv[0]).name == "carryover", f"{argv}: not a carryover command"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}`: the carryover command line refuses it (see stderr)")


def env_names(text: str) -> set[str]:
    """Return the NAMEs of the ${NAME} placeholders in a YAML text's values (not comments)."""
    values = re.sub(r"(?m)(^|\s)#.*$", "", text)
    return {match.group(1) for match in ENV_PATTERN.finditer(values)}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def unit(name: str) -> configparser.ConfigParser:
    """Read a systemd unit as systemd would: case-sensitive keys, repeated keys allowed."""
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       comment_prefixes=("#", ";"))  # fmt: skip
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with (UNITS / name).open(encoding="utf-8") as file:
        parser.read_file(file)
    return parser


def procfile() -> dict[str, str]:
    """Return the Procfile's process types and their commands."""
    entries = {}
    for line in (DEPLOY / "Procfile").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PROCFILE_LINE.fullmatch(line)
        assert match, f"Procfile: {line!r} is not `name: command`"
        entries[match["name"]] = match["command"]
    return entries


# -- every example says it is one -------------------------------------------------------------
@pytest.mark.parametrize(
    "path", sorted(p for p in DEPLOY.rglob("*") if p.is_file()), ids=lambda p: p.name
)
def test_each_file_starts_by_saying_it_is_an_example(path):
    """Each file of deploy/ opens with a comment saying it is an example and what to change."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    if path.name.endswith(".dockerignore"):
        assert first.startswith("# What the image of deploy/Dockerfile leaves out")
        return
    assert first.startswith("# EXAMPLE "), f"{path.name}: {first!r}"
    head = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert "Change" in head or "change" in head, f"{path.name}: says nothing to change"


def test_the_readme_points_at_each_example():
    """The README's "Operating it" names every file of deploy/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    for path in DEPLOY.rglob("*"):
        if path.is_file() and not path.name.endswith(".dockerignore"):
            assert path.relative_to(ROOT).as_posix() in section, path.name


# -- the command line -------------------------------------------------------------------------
def test_a_command_or_option_the_cli_lacks_is_refused():
    """The check of commands fails on an option carryover does not have."""
    with pytest.raises(pytest.fail.Exception, match="refuses it"):
        carryover_args(["carryover", "worker", "--threads", "4"])


# -- Procfile ---------------------------------------------------------------------------------
def test_the_procfile_migrates_on_release_and_runs_web_and_worker():
    """release runs `carryover db upgrade`, web serves on $PORT, worker runs a worker."""
    entries = procfile()
    assert set(entries) == {"release", "web", "worker"}
    commands = {name: carryover_args(shlex.split(command.replace("$PORT", "8080")))
                for name, command in entries.items()}  # fmt: skip
    assert commands["release"].func is cmd_db_upgrade
    assert commands["web"].func is cmd_serve and commands["web"].port == 8080
    assert commands["worker"].func is cmd_worker


# -- systemd ----------------------------------------------------------------------------------
def test_the_migration_unit_is_a_oneshot_db_upgrade():
    """carryover-migrate.service runs `carryover db upgrade` once, as the carryover user."""
    service = unit("carryover-migrate.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == "carryover" and service["EnvironmentFile"].startswith("/etc/")
    assert carryover_args(shlex.split(service["ExecStart"])).func is cmd_db_upgrade


@pytest.mark.parametrize(("name", "command"),
                         [("carryover-web.service", "web"),
                          ("carryover-worker@.service", "worker")])  # fmt: skip
def test_web_and_worker_units_are_supervised_after_the_migration(name, command):
    """The unit runs the command as its own user, needs the migration, stops on SIGTERM."""
    parsed = unit(name)
    needs = parsed["Unit"]
    assert "carryover-migrate.service" in needs["Requires"].split()
    assert "carryover-migrate.service" in needs["After"].split()
    service = parsed["Service"]
    assert carryover_args(shlex.split(service["ExecStart"])).func is RUNNING[command]
    assert service["User"] == "carryover" and service["Group"] == "carryover"
    assert service["EnvironmentFile"] == "/etc/carryover/carryover.env"
    assert int(service["LimitNOFILE"]) >= 1024
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    # `carryover worker` waits up to 15 s for its threads after SIGTERM: the unit waits longer.
    assert int(service["TimeoutStopSec"]) > 15
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verifies_the_units(tmp_path):
    """systemd's own checker accepts the units, run with this installation's carryover."""
    analyze = shutil.which("systemd-analyze")
    installed = Path(sys.executable).parent / "carryover"
    if analyze is None:  # configparser checked them above; systemd's checker is a bonus
        return
    for path in UNITS.glob("*.service"):
        text = path.read_text(encoding="utf-8").replace("/opt/carryover/bin/carryover",
                                                         str(installed))  # fmt: skip
        (tmp_path / path.name.replace("@.", "@1.")).write_text(text, encoding="utf-8")
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    said = [line for line in done.stderr.splitlines() if "carryover" in line]
    assert done.returncode == 0 and said == [], done.stderr


# -- compose ----------------------------------------------------------------------------------
def test_compose_runs_postgres_a_migration_web_and_scalable_workers():
    """PostgreSQL is checked, the migration waits for it, web and workers for the migration."""
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "web", "worker"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    commands = {name: carryover_args(services[name]["command"]) for name in RUNNING}
    assert carryover_args(services["migrate"]["command"]).func is cmd_db_upgrade
    for name in RUNNING:
        assert commands[name].func is RUNNING[name]
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
        assert services[name]["stop_signal"] == "SIGTERM"
    # --scale worker=N needs a worker without a fixed name or a published port.
    assert not {"container_name", "ports"} & set(services["worker"])


def test_compose_takes_secrets_from_the_environment_and_feeds_every_placeholder():
    """Each ${NAME} of deploy/config.yaml is set by compose, secrets only from the environment."""
    services = compose()["services"]
    environment = services["worker"]["environment"]
    assert environment == services["web"]["environment"] == services["migrate"]["environment"]
    needed = env_names((DEPLOY / "config.yaml").read_text(encoding="utf-8"))
    assert needed <= set(environment)
    for name, value in environment.items():
        if SECRET_NAME.search(name):
            assert str(value).startswith("${" + name), f"{name}: a secret written in the file"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${CARRYOVER_DB_PASSWORD"
    )


# -- the configuration ------------------------------------------------------------------------
def test_the_example_configuration_passes_the_real_parser(tmp_path, monkeypatch):
    """deploy/config.yaml, its placeholders set, is a PostgreSQL installation without embedded
    worker whose integrations are all known."""
    text = (DEPLOY / "config.yaml").read_text(encoding="utf-8")
    for name in env_names(text):
        monkeypatch.setenv(name, f"example-{name.lower().replace('_', '-')}")
    checked = tmp_path / "config.yaml"
    checked.write_text(text, encoding="utf-8")

    config = load_config(checked, PluginRegistry.from_entry_points().schemas())
    assert isinstance(config, Config)
    assert config.database_url.startswith("postgresql+psycopg://carryover:example-")
    assert config.worker["enabled"] is False
    assert config.server["processes"] > 1  # several web processes, under gunicorn
    assert config.secret_key == "example-carryover-secret-key"
    assert set(config.integrations) == {"zendesk", "salesforce", "twilio", "cti"}
