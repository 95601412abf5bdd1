"""`carryover db upgrade` says what it did: created the store, upgraded it, or found it current."""

from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from middleware.cli import main
from middleware.store.tables import _alembic_config, store_revision


def test_db_upgrade_says_created_then_up_to_date_then_upgraded_from(tmp_path, capsys):
    """A new file is created at the newest migration; a store a migration behind names both."""
    url = f"sqlite:///{tmp_path / 'carryover.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {url}\n")

    assert main(["db", "upgrade", "--config", str(config)]) == 0
    engine = create_engine(url)
    newest = store_revision(engine)
    assert newest is not None
    assert f"database created, at migration {newest}" in capsys.readouterr().out

    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"database is up to date, at migration {newest}" in capsys.readouterr().out

    # The migration before the newest, as the chain says (numbers may skip while branches
    # that each add one are merged).
    older = ScriptDirectory.from_config(_alembic_config(engine)).get_revision(newest).down_revision
    assert isinstance(older, str)
    command.downgrade(_alembic_config(engine), older)
    engine.dispose()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert f"database upgraded from migration {older} to {newest}" in said
