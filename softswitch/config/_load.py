"""Loading: dataclass defaults < TOML file < ``SOFTSWITCH_*`` environment < CLI flags.

Each layer is coerced to the field's type as it is read (a wrong type raises
:class:`ConfigError` naming the key as the user wrote it: ``file.toml:limits.cps``,
``SOFTSWITCH_HTTP_PORT``, ``--http-port``), merged by :class:`_Layers`, then checked once by
``_validate``; the default account is generated last if none was given.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from typing import Any

from softswitch.config._account import _load_or_generate_account
from softswitch.config._hostport import parse_hostport, parse_port_range
from softswitch.config._model import (
    Account,
    Config,
    ConfigError,
    Gateway,
    HttpSettings,
    InboundRoute,
    Limits,
    User,
)
from softswitch.config._validate import _validate

ENV_PREFIX = "SOFTSWITCH_"

# The package's name, as before the split, so log filters keep matching.
_log = logging.getLogger("softswitch.config")


# --------------------------------------------------------------------------- coercion


def _coerce(key: str, value: Any, kind: str) -> Any:
    """Turn a TOML value or an environment string into the field's type, or raise ConfigError."""
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if kind == "optstr":
        if value is None:
            return None
        if isinstance(value, str):
            return value or None
        raise ConfigError(key, f"expected a string, got {value!r}")
    if kind == "int" or kind == "optint":
        if kind == "optint" and (value is None or value == ""):
            return None
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if kind == "float" or kind == "optfloat":
        if kind == "optfloat" and (value is None or value == ""):
            return None
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
        raise ConfigError(key, f"expected true/false, got {value!r}")
    if kind == "list":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(key, f"expected a list of strings, got {value!r}")
    raise AssertionError(kind)  # pragma: no cover


def _kind_of(tp: Any) -> str:
    """Map a dataclass annotation (a string under ``from __future__ import annotations``)."""
    return {
        "str": "str",
        "str | None": "optstr",
        "int": "int",
        "int | None": "optint",
        "float": "float",
        "float | None": "optfloat",
        "bool": "bool",
        "list[str]": "list",
    }.get(str(tp), "other")


def _scalar_fields(cls: type) -> dict[str, str]:
    return {
        f.name: _kind_of(f.type) for f in dataclasses.fields(cls) if _kind_of(f.type) != "other"
    }


_CONFIG_FIELDS = _scalar_fields(Config)
_LIMIT_FIELDS = _scalar_fields(Limits)
_HTTP_FIELDS = _scalar_fields(HttpSettings)
_ACCOUNT_FIELDS = _scalar_fields(Account)
_GATEWAY_FIELDS = _scalar_fields(Gateway)
_INBOUND_FIELDS = _scalar_fields(InboundRoute)
_USER_FIELDS = _scalar_fields(User)
# Derived or computed at load time, never read from a file or the environment.
_INTERNAL_FIELDS = {"generated", "account_file", "ignored_env"}


def _build(cls: type, key: str, table: Any, kinds: dict[str, str]) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(key, f"expected a table, got {table!r}")
    kwargs = {}
    for name, value in table.items():
        if name not in kinds:
            raise ConfigError(f"{key}.{name}", "unknown key")
        kwargs[name] = _coerce(f"{key}.{name}", value, kinds[name])
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    for name in required:
        if name not in kwargs:
            raise ConfigError(f"{key}.{name}", "required")
    return cls(**kwargs)


# --------------------------------------------------------------------------- layers


class _Layers:
    """Accumulates raw values layer by layer before one validation pass."""

    def __init__(self) -> None:
        self.top: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.http: dict[str, Any] = {}
        self.accounts: list[Account] | None = None
        self.gateways: list[Gateway] | None = None
        self.inbound: list[InboundRoute] | None = None
        self.users: list[User] | None = None
        self.default_account: tuple[str, str] | None = None
        self.unknown_env: list[str] = []

    def set_http(self, key: str, table: Any) -> None:
        """The ``[http]`` table: :class:`HttpSettings` keys, and ``host``/``port`` for
        ``http_host``/``http_port`` (a TOML file cannot have both ``http = "HOST:PORT"`` and
        an ``[http]`` table)."""
        if not isinstance(table, Mapping):
            raise ConfigError(key, "expected a table or HOST:PORT")
        for sub, v in table.items():
            if sub in ("host", "port"):
                self.set_top(f"{key}.{sub}", f"http_{sub}", v)
            elif sub in _HTTP_FIELDS:
                self.http[sub] = _coerce(f"{key}.{sub}", v, _HTTP_FIELDS[sub])
            else:
                raise ConfigError(f"{key}.{sub}", "unknown key")

    def set_top(self, key: str, name: str, value: Any) -> None:
        if name == "http" and isinstance(value, Mapping):
            self.set_http(key, value)
            return
        if name.startswith("http_") and name[5:] in _HTTP_FIELDS:
            self.http[name[5:]] = _coerce(key, value, _HTTP_FIELDS[name[5:]])
            return
        if name in ("http", "sip"):
            if not isinstance(value, str):
                raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
            default_port = 8088 if name == "http" else 5060
            try:
                host, port = parse_hostport(value, self.top.get(f"{name}_port", default_port))
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
            self.top[f"{name}_host"] = host
            self.top[f"{name}_port"] = port
            return
        if name == "rtp_ports":
            if not isinstance(value, str):
                raise ConfigError(key, f"expected LOW-HIGH, got {value!r}")
            try:
                low, high = parse_port_range(value)
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
            self.top["rtp_port_min"] = low
            self.top["rtp_port_max"] = high
            return
        if name in ("limits", "accounts", "gateways", "inbound", "users"):
            raise ConfigError(key, "not a scalar setting")
        if name.startswith("limits.") or name.startswith("limits_"):
            sub = name[len("limits.") :]
            if sub not in _LIMIT_FIELDS:
                raise ConfigError(key, "unknown key")
            self.limits[sub] = _coerce(key, value, _LIMIT_FIELDS[sub])
            return
        if name not in _CONFIG_FIELDS or name in _INTERNAL_FIELDS:
            raise ConfigError(key, "unknown key")
        self.top[name] = _coerce(key, value, _CONFIG_FIELDS[name])

    def apply_toml(self, data: Mapping[str, Any], origin: str) -> None:
        for name, value in data.items():
            key = f"{origin}:{name}"
            if name == "limits":
                if not isinstance(value, Mapping):
                    raise ConfigError(key, "expected a table")
                for sub, v in value.items():
                    if sub not in _LIMIT_FIELDS:
                        raise ConfigError(f"{key}.{sub}", "unknown key")
                    self.limits[sub] = _coerce(f"{key}.{sub}", v, _LIMIT_FIELDS[sub])
            elif name == "accounts":
                if not isinstance(value, list):
                    raise ConfigError(key, "expected an array of tables [[accounts]]")
                self.accounts = [
                    _build(Account, f"{key}[{i}]", t, _ACCOUNT_FIELDS) for i, t in enumerate(value)
                ]
            elif name == "gateways":
                self.gateways = _gateways_from(key, value)
            elif name == "inbound":
                self.inbound = _inbound_from(key, value)
            elif name == "users":
                self.users = _users_from(key, value)
            else:
                self.set_top(key, name, value)

    def apply_env(self, env: Mapping[str, str]) -> None:
        for var, value in env.items():
            if not var.startswith(ENV_PREFIX):
                continue
            name = var[len(ENV_PREFIX) :].lower()
            if name in ("config", "auth_id", "auth_token"):
                continue  # handled by load_config
            if name == "gateways":
                try:
                    data = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ConfigError(var, f"not JSON: {exc}") from None
                self.gateways = _gateways_from(var, data)
                continue
            if name in ("inbound", "users"):
                try:
                    data = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ConfigError(var, f"not JSON: {exc}") from None
                if name == "inbound":
                    self.inbound = _inbound_from(var, data)
                else:
                    self.users = _users_from(var, data)
                continue
            if name.startswith("limits_"):
                self.set_top(var, name, value)
                continue
            if name in _INTERNAL_FIELDS or name in ("accounts", "limits"):
                raise ConfigError(var, "cannot be set from the environment")
            known_http = name.startswith("http_") and name[5:] in _HTTP_FIELDS
            if (
                name not in _CONFIG_FIELDS
                and name not in ("http", "sip", "rtp_ports")
                and not known_http
            ):
                # Probably a typo, but tools around us (CI, benchmarks) may share the prefix:
                # warn rather than refuse to start.
                self.unknown_env.append(var)
                _log.warning("ignoring unknown setting %s", var)
                continue
            self.set_top(var, name, value)
        auth_id = env.get(ENV_PREFIX + "AUTH_ID")
        auth_token = env.get(ENV_PREFIX + "AUTH_TOKEN")
        if auth_id or auth_token:
            self.set_default_account(
                ENV_PREFIX + "AUTH_ID", auth_id, ENV_PREFIX + "AUTH_TOKEN", auth_token
            )

    def apply_overrides(self, overrides: Mapping[str, object]) -> None:
        auth_id = overrides.get("auth_id")
        auth_token = overrides.get("auth_token")
        for name, value in overrides.items():
            if value is None or name in ("auth_id", "auth_token"):
                continue  # None = flag not given
            key = f"--{name.replace('_', '-')}"
            if name == "gateways":
                self.gateways = _gateways_from(key, value)
            elif name == "inbound":
                self.inbound = _inbound_from(key, value)
            elif name == "users":
                self.users = _users_from(key, value)
            elif name == "accounts":
                if not isinstance(value, list):
                    raise ConfigError(key, "expected a list")
                self.accounts = [
                    v if isinstance(v, Account) else _build(Account, key, v, _ACCOUNT_FIELDS)
                    for v in value
                ]
            elif name == "http" and isinstance(value, HttpSettings):
                self.set_http(key, dataclasses.asdict(value))
            elif name == "limits":
                if isinstance(value, Limits):
                    value = dataclasses.asdict(value)
                if not isinstance(value, Mapping):
                    raise ConfigError(key, "expected a table")
                for sub, v in value.items():
                    self.set_top(key, f"limits.{sub}", v)
            else:
                self.set_top(key, name, value)
        if auth_id is not None or auth_token is not None:
            self.set_default_account(
                "--auth-id",
                None if auth_id is None else str(auth_id),
                "--auth-token",
                None if auth_token is None else str(auth_token),
            )

    def set_default_account(
        self, id_key: str, auth_id: str | None, token_key: str, auth_token: str | None
    ) -> None:
        if not auth_id:
            raise ConfigError(id_key, f"required together with {token_key}")
        if not auth_token:
            raise ConfigError(token_key, f"required together with {id_key}")
        self.default_account = (auth_id, auth_token)


def _gateways_from(key: str, value: Any) -> list[Gateway]:
    if not isinstance(value, list):
        raise ConfigError(key, "expected an array of tables [[gateways]]")
    return [
        v if isinstance(v, Gateway) else _build(Gateway, f"{key}[{i}]", v, _GATEWAY_FIELDS)
        for i, v in enumerate(value)
    ]


def _inbound_from(key: str, value: Any) -> list[InboundRoute]:
    if not isinstance(value, list):
        raise ConfigError(key, "expected an array of tables [[inbound]]")
    return [
        v if isinstance(v, InboundRoute) else _build(InboundRoute, f"{key}[{i}]", v, _INBOUND_FIELDS)
        for i, v in enumerate(value)
    ]


def _users_from(key: str, value: Any) -> list[User]:
    if not isinstance(value, list):
        raise ConfigError(key, "expected an array of tables [[users]]")
    return [
        v if isinstance(v, User) else _build(User, f"{key}[{i}]", v, _USER_FIELDS)
        for i, v in enumerate(value)
    ]


# --------------------------------------------------------------------------- entry point


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the :class:`Config` from defaults, ``path`` (TOML), ``env`` and ``overrides``.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the process environment (tests).
    ``overrides`` are CLI flags keyed by field name (``None`` values = flag not given), plus
    ``http``/``sip`` (``HOST:PORT``), ``rtp_ports`` (``LOW-HIGH``), ``auth_id``/``auth_token``
    and ``limits.<field>``.  Raises :class:`ConfigError` naming the offending key.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    layers = _Layers()
    if path is None:
        path = environ.get(ENV_PREFIX + "CONFIG") or None
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(path, "config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, f"invalid TOML: {exc}") from None
        layers.apply_toml(data, os.path.basename(path))
    layers.apply_env(environ)
    if overrides:
        layers.apply_overrides(overrides)

    cfg = Config(**layers.top)
    cfg.ignored_env = sorted(layers.unknown_env)
    limits = dataclasses.asdict(cfg.limits)
    limits.update(layers.limits)
    cfg.limits = Limits(**limits)
    cfg.http = HttpSettings(**{**dataclasses.asdict(cfg.http), **layers.http})
    if layers.accounts is not None:
        cfg.accounts = layers.accounts
    if layers.gateways is not None:
        cfg.gateways = layers.gateways
    if layers.inbound is not None:
        cfg.inbound = layers.inbound
    if layers.users is not None:
        cfg.users = layers.users
    if layers.default_account is not None:
        auth_id, token = layers.default_account
        existing = cfg.account(auth_id)
        if existing is not None:
            existing.auth_token = token
            # The default account is the first one: API helpers and `serve` show it.
            cfg.accounts.remove(existing)
            cfg.accounts.insert(0, existing)
        else:
            cfg.accounts.insert(0, Account(auth_id=auth_id, auth_token=token, name="default"))
    _validate(cfg)
    if not cfg.accounts:
        _load_or_generate_account(cfg)
    _log.debug("configuration loaded from %s", path or "defaults")
    return cfg
