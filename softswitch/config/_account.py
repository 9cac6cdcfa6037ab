"""The account generated when none is configured, persisted next to the database."""

from __future__ import annotations

import json
import os
import secrets
import string

from softswitch.config._model import Account, Config, ConfigError

_ALNUM_UPPER = string.ascii_uppercase + string.digits
_TOKEN_CHARS = string.ascii_letters + string.digits


def generate_account() -> Account:
    """A fresh account: ``MA`` + 18 upper-case alphanumerics (the auth-id shape the HTTP API's
    clients expect), and a 40-character token."""
    auth_id = "MA" + "".join(secrets.choice(_ALNUM_UPPER) for _ in range(18))
    token = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(40))
    return Account(auth_id=auth_id, auth_token=token, name="generated")


def account_file_path(db_path: str) -> str | None:
    """Where the generated account lives: next to the database (None for in-memory DBs)."""
    if db_path == ":memory:" or db_path.startswith("file::memory:"):
        return None
    return f"{db_path}.account.json"


def _load_or_generate_account(cfg: Config) -> None:
    path = account_file_path(cfg.db_path)
    if path is not None and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            acc = Account(
                auth_id=str(data["auth_id"]),
                auth_token=str(data["auth_token"]),
                name=str(data.get("name", "generated")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(path, f"unreadable generated account file: {exc}") from None
        cfg.accounts = [acc]
        cfg.account_file = path
        return
    acc = generate_account()
    cfg.accounts = [acc]
    cfg.generated = True
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # 0600: the token is a credential.  O_EXCL so two processes racing cannot both write.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _load_or_generate_account(cfg)
        cfg.generated = False
        return
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"auth_id": acc.auth_id, "auth_token": acc.auth_token, "name": acc.name}, fh)
        fh.write("\n")
    cfg.account_file = path
