"""The installation's secret key, and secrets sealed with it before they are stored.

Integration settings saved in the admin UI keep their secrets (API tokens, webhook secrets)
encrypted in the store with Fernet (AES-128-CBC and HMAC-SHA256), under a key derived from the
installation's secret key. A copy of the store alone reveals none of them.

The secret key is `secret_key` from the configuration. Without one, an SQLite installation
makes its own and keeps it beside the database file (`secret.key`, readable by its owner
only), so that `make run` needs no setup; PostgreSQL installations must set `secret_key`, the
same on every host, to store secrets.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import make_url

from middleware.config import Config

KEY_FILE = "secret.key"


class SealError(ValueError):
    """A sealed secret cannot be opened: it was sealed under another secret key."""


class SecretBox:
    """Seal and open secrets with a key derived from the installation's secret key."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"carryover sealed settings"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> str:
        """Return the secret encrypted and authenticated, as text."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        """Return the secret; raise SealError if it was sealed under another key."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SealError("sealed under another secret_key") from None


def key_file(database_url: str) -> Path | None:
    """Return where an SQLite installation keeps its own secret key; None for others."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().parent / KEY_FILE


def installation_key(config: Config) -> str | None:
    """Return the secret key: the configured one, else an SQLite installation's own."""
    if config.secret_key:
        return config.secret_key
    path = key_file(config.database_url)
    if path is None:
        return None
    if not path.exists():
        _create_key_file(path)
    return path.read_text(encoding="ascii").strip()


def _create_key_file(path: Path) -> None:
    # Written aside, then linked into place: a process starting at the same moment either
    # finds no file or a whole one, and the first link wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
