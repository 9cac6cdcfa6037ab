"""Configuration: one TOML file, ``SOFTSWITCH_*`` environment overrides, command-line flags.

Precedence, lowest first::

    dataclass defaults < TOML file < environment < overrides (CLI flags)

The TOML file uses the dataclass field names as keys at the top level, a ``[limits]`` table,
``[[accounts]]`` and ``[[gateways]]`` arrays of tables (see ``softswitch.example.toml`` at the
repository root, which documents every key).  Unknown keys are errors, so a typo never silently
falls back to a default.

Environment variables are ``SOFTSWITCH_`` + the upper-cased field name (``SOFTSWITCH_HTTP_PORT``,
``SOFTSWITCH_DB_PATH``), ``SOFTSWITCH_LIMITS_<FIELD>`` for ``[limits]``, ``SOFTSWITCH_HTTP`` /
``SOFTSWITCH_SIP`` (``HOST:PORT``), ``SOFTSWITCH_RTP_PORTS`` (``LOW-HIGH``),
``SOFTSWITCH_AUTH_ID`` + ``SOFTSWITCH_AUTH_TOKEN`` for the default account,
``SOFTSWITCH_GATEWAYS`` (a JSON list of gateway tables) and ``SOFTSWITCH_CONFIG`` (the TOML path
used when :func:`load_config` gets none).

When no account is configured anywhere, one is generated in the shape of a Plivo auth id
(20 upper-case alphanumerics starting ``MA``) with a 40-character token and persisted next to the
database in ``<db_path>.account.json`` so that a restart keeps the same credentials.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Account",
    "Config",
    "ConfigError",
    "Gateway",
    "Limits",
    "load_config",
    "parse_hostport",
    "parse_port_range",
    "select_gateways",
]

ENV_PREFIX = "SOFTSWITCH_"

SIP_TRANSPORTS = ("udp", "tcp")
"""Transports the SIP user agent implements; TLS (RFC 3261 §26.2) is not, so ``tls`` is refused
rather than dialled or listened on over plain TCP."""
KNOWN_CODECS = ("PCMU", "PCMA")
"""Codecs the media engine encodes (G.711, ``media._g711``); G722 and OPUS are refused rather than
silently left out of the offer."""
NOT_IMPLEMENTED = {
    "tls": "TLS is not implemented (udp and tcp are)",
    "register": "REGISTER to a trunk is not implemented; the trunk must accept calls without it",
}
SHUTDOWN_MODES = ("drain", "hangup")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(ValueError):
    """A configuration value is invalid; ``key`` names it the way the user wrote it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class Account:
    """An API account: HTTP Basic credentials of the Plivo-style API and its own limits.

    ``cps`` / ``max_concurrent`` left at ``None`` inherit the global :class:`Limits`.
    """

    auth_id: str
    auth_token: str
    name: str = ""
    cps: float | None = None
    max_concurrent: int | None = None


@dataclass
class Gateway:
    """A SIP trunk that outbound calls may be routed through.

    ``prefix``/``prefixes`` select destination numbers by leading digits (empty = any number);
    ``strip`` digits are removed and ``add_prefix`` prepended before dialing, like the
    FreeSWITCH dial-plan rules the legacy Plivo ``Gateways`` parameter relied on.
    """

    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    prefix: str = ""
    prefixes: list[str] = field(default_factory=list)
    strip: int = 0
    add_prefix: str = ""
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    timeout_s: int = 60
    retries: int = 1
    from_domain: str | None = None
    caller_id_in_from: bool = True
    p_asserted_identity: bool = False
    register: bool = False

    def __post_init__(self) -> None:
        # One list is the source of truth; ``prefix`` stays as the first entry for readers
        # that only look at the scalar.
        if self.prefix and self.prefix not in self.prefixes:
            self.prefixes = [self.prefix, *self.prefixes]
        if not self.prefix and self.prefixes:
            self.prefix = self.prefixes[0]

    def match_length(self, number: str) -> int | None:
        """Length of the longest prefix matching ``number`` (0 for a catch-all), else None.

        A leading ``+`` of an E.164 number is ignored, since the docs write numbers both ways.
        """
        digits = number[1:] if number.startswith("+") else number
        if not self.prefixes:
            return 0
        best: int | None = None
        for p in self.prefixes:
            p_digits = p[1:] if p.startswith("+") else p
            if digits.startswith(p_digits) and (best is None or len(p_digits) > best):
                best = len(p_digits)
        return best

    def matches(self, number: str) -> bool:
        """True if this gateway may carry calls to ``number``."""
        return self.match_length(number) is not None

    def rewrite(self, number: str) -> str:
        """The number as dialed through this gateway: ``strip`` digits off, ``add_prefix`` on.

        A leading ``+`` is kept in front and not counted as a digit.
        """
        plus = number.startswith("+")
        digits = number[1:] if plus else number
        digits = self.add_prefix + digits[self.strip :]
        return ("+" if plus and not self.add_prefix else "") + digits


@dataclass
class Limits:
    """Global admission limits; an account may override ``cps`` and ``max_concurrent``."""

    cps: float = 10.0
    """Calls per second per account; 0 = unlimited."""
    max_concurrent: int = 1000
    max_queue: int = 10000
    bulk_max: int = 1000
    """Most destinations in one bulk request (Plivo's ``to`` with ``<``): 1000 per the docs."""


@dataclass
class Config:
    """Everything the ``serve`` process needs; see ``softswitch.example.toml`` for each key."""

    http_host: str = "127.0.0.1"
    http_port: int = 8088
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    sip_transports: list[str] = field(default_factory=lambda: ["udp", "tcp"])
    public_host: str | None = None
    rtp_port_min: int = 16384
    rtp_port_max: int = 32767
    db_path: str = "softswitch.db"
    data_dir: str = "data"
    base_url: str | None = None
    accounts: list[Account] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    shutdown_mode: str = "drain"
    drain_timeout_s: float = 30.0
    webhook_timeout_s: float = 10.0
    webhook_retries: int = 5
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 60.0
    answer_url_attempts: int = 3
    answer_url_deadline_s: float = 60.0
    send_digits_default_tone_ms: int = 250
    """Tone length of ``send_digits`` without ``@ms``.  250 ms is FreeSWITCH's 2000 *samples*
    at 8 kHz, which is where the syntax comes from; set 2000 for the legacy doc's "2000 ms"."""
    user_agent: str = "softswitch/0.1"
    log_level: str = "INFO"
    generated: bool = False
    """True when the default account was generated by this very load (``serve`` prints it)."""
    account_file: str | None = None
    """Path of the persisted generated account, when that is where the account came from."""
    ignored_env: list[str] = field(default_factory=list)
    """``SOFTSWITCH_*`` variables that name no setting (probably typos; ``serve`` may warn)."""

    @property
    def http_base_url(self) -> str:
        """Public URL of the HTTP API, used to build recording URLs and the like."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{format_hostport(self.http_host, self.http_port)}"

    def account(self, auth_id: str) -> Account | None:
        """The account with this auth id, or None."""
        for acc in self.accounts:
            if acc.auth_id == auth_id:
                return acc
        return None

    def account_cps(self, account: Account) -> float:
        """Effective calls-per-second limit of ``account`` (0 = unlimited)."""
        return self.limits.cps if account.cps is None else account.cps

    def account_max_concurrent(self, account: Account) -> int:
        """Effective concurrency limit of ``account``."""
        if account.max_concurrent is None:
            return self.limits.max_concurrent
        return account.max_concurrent


# --------------------------------------------------------------------------- host:port helpers


def parse_hostport(s: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]``; IPv6 literals go in brackets as in RFC 3986 §3.2.2.

    A bare IPv6 address without brackets (``::1``) is accepted as a host without a port, since
    its colons cannot be a port separator.
    """
    text = s.strip()
    if not text:
        raise ValueError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated '[' in {s!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError as exc:
            raise ValueError(f"not an IPv6 address in brackets: {host!r}") from exc
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {s!r}")
        return host, _parse_port(rest[1:], s)
    if text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError as exc:
            raise ValueError(f"bad host {s!r}: IPv6 addresses need brackets with a port") from exc
        return text, default_port
    host, sep, port = text.partition(":")
    if not host:
        raise ValueError(f"empty host in {s!r}")
    if not sep:
        return host, default_port
    return host, _parse_port(port, s)


def format_hostport(host: str, port: int) -> str:
    """Inverse of :func:`parse_hostport`: brackets around IPv6 literals."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad port {text!r} in {whole!r}")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return port


def parse_port_range(s: str) -> tuple[int, int]:
    """Parse ``LOW-HIGH`` (the RTP port range flag)."""
    low, sep, high = s.strip().partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"expected LOW-HIGH, got {s!r}")
    return int(low), int(high)


def select_gateways(gateways: list[Gateway], number: str) -> list[Gateway]:
    """Gateways that may carry ``number``, longest matching prefix first, then config order.

    Config order among equal prefixes is the failover order.
    """
    ranked = []
    for index, gw in enumerate(gateways):
        length = gw.match_length(number)
        if length is not None:
            ranked.append((-length, index, gw))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [gw for _, _, gw in ranked]


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
_ACCOUNT_FIELDS = _scalar_fields(Account)
_GATEWAY_FIELDS = _scalar_fields(Gateway)
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
        self.accounts: list[Account] | None = None
        self.gateways: list[Gateway] | None = None
        self.default_account: tuple[str, str] | None = None
        self.unknown_env: list[str] = []

    def set_top(self, key: str, name: str, value: Any) -> None:
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
        if name in ("limits", "accounts", "gateways"):
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
            if name.startswith("limits_"):
                self.set_top(var, name, value)
                continue
            if name in _INTERNAL_FIELDS or name in ("accounts", "limits"):
                raise ConfigError(var, "cannot be set from the environment")
            if name not in _CONFIG_FIELDS and name not in ("http", "sip", "rtp_ports"):
                # Probably a typo, but tools around us (CI, benchmarks) may share the prefix:
                # warn rather than refuse to start.
                self.unknown_env.append(var)
                logging.getLogger(__name__).warning("ignoring unknown setting %s", var)
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
            elif name == "accounts":
                if not isinstance(value, list):
                    raise ConfigError(key, "expected a list")
                self.accounts = [
                    v if isinstance(v, Account) else _build(Account, key, v, _ACCOUNT_FIELDS)
                    for v in value
                ]
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


# --------------------------------------------------------------------------- validation


def _validate(cfg: Config) -> None:
    for name in ("http_port", "sip_port"):
        port = getattr(cfg, name)
        if not 0 <= port <= 65535:  # 0 = ephemeral, handy in tests
            raise ConfigError(name, f"{port} out of range 0-65535")
    for name in ("http_host", "sip_host"):
        if not getattr(cfg, name):
            raise ConfigError(name, "empty")
    if not cfg.sip_transports:
        raise ConfigError("sip_transports", "at least one transport is needed")
    cfg.sip_transports = [t.lower() for t in cfg.sip_transports]
    for t in cfg.sip_transports:
        if t == "tls":
            raise ConfigError("sip_transports", NOT_IMPLEMENTED["tls"])
        if t not in SIP_TRANSPORTS:
            raise ConfigError("sip_transports", f"{t!r} is not one of {', '.join(SIP_TRANSPORTS)}")
    if not 1 <= cfg.rtp_port_min < cfg.rtp_port_max <= 65535:
        raise ConfigError(
            "rtp_ports", f"need 1 <= min < max <= 65535, got {cfg.rtp_port_min}-{cfg.rtp_port_max}"
        )
    # RFC 3550 §11: RTP takes the even port, RTCP the odd one above it: two ports per stream.
    if cfg.rtp_port_max - cfg.rtp_port_min < 1:
        raise ConfigError("rtp_ports", "the range must hold at least one RTP/RTCP pair")
    if not cfg.db_path:
        raise ConfigError("db_path", "empty")
    if cfg.base_url is not None and not cfg.base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url", f"must start with http:// or https://, got {cfg.base_url!r}")
    if cfg.shutdown_mode not in SHUTDOWN_MODES:
        raise ConfigError("shutdown_mode", f"{cfg.shutdown_mode!r} is not 'drain' or 'hangup'")
    cfg.log_level = cfg.log_level.upper()
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"{cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    for name in ("drain_timeout_s", "webhook_backoff_s", "webhook_backoff_max_s"):
        if getattr(cfg, name) < 0:
            raise ConfigError(name, "must be >= 0")
    for name in ("webhook_timeout_s", "answer_url_deadline_s"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(name, "must be > 0")
    if cfg.webhook_retries < 0:
        raise ConfigError("webhook_retries", "must be >= 0")
    if cfg.answer_url_attempts < 1:
        raise ConfigError("answer_url_attempts", "must be >= 1")
    # FreeSWITCH's floor for a DTMF tone is 50 ms; above 10 s is surely a typo.
    if not 50 <= cfg.send_digits_default_tone_ms <= 10000:
        raise ConfigError("send_digits_default_tone_ms", "must be within 50-10000")
    lim = cfg.limits
    if lim.cps < 0:
        raise ConfigError("limits.cps", "must be >= 0 (0 = unlimited)")
    for name in ("max_concurrent", "max_queue", "bulk_max"):
        if getattr(lim, name) < 1:
            raise ConfigError(f"limits.{name}", "must be >= 1")
    seen: set[str] = set()
    for i, acc in enumerate(cfg.accounts):
        key = f"accounts[{i}]"
        if not acc.auth_id or not all(c.isalnum() or c in "-_" for c in acc.auth_id):
            raise ConfigError(
                f"{key}.auth_id", f"must be non-empty letters/digits/-/_: {acc.auth_id!r}"
            )
        if acc.auth_id in seen:
            raise ConfigError(f"{key}.auth_id", f"duplicate {acc.auth_id!r}")
        seen.add(acc.auth_id)
        if not acc.auth_token:
            raise ConfigError(f"{key}.auth_token", "empty")
        if acc.cps is not None and acc.cps < 0:
            raise ConfigError(f"{key}.cps", "must be >= 0 (0 = unlimited)")
        if acc.max_concurrent is not None and acc.max_concurrent < 1:
            raise ConfigError(f"{key}.max_concurrent", "must be >= 1")
    names: set[str] = set()
    for i, gw in enumerate(cfg.gateways):
        key = f"gateways[{i}]"
        if not gw.name:
            raise ConfigError(f"{key}.name", "empty")
        if gw.name in names:
            raise ConfigError(f"{key}.name", f"duplicate {gw.name!r}")
        names.add(gw.name)
        if not gw.host:
            raise ConfigError(f"{key}.host", "empty")
        if not 1 <= gw.port <= 65535:
            raise ConfigError(f"{key}.port", f"{gw.port} out of range 1-65535")
        gw.transport = gw.transport.lower()
        if gw.transport == "tls":
            raise ConfigError(f"{key}.transport", NOT_IMPLEMENTED["tls"])
        if gw.transport not in SIP_TRANSPORTS:
            raise ConfigError(f"{key}.transport", f"{gw.transport!r} is not udp or tcp")
        if gw.register:
            raise ConfigError(f"{key}.register", NOT_IMPLEMENTED["register"])
        for p in gw.prefixes:
            if not p.lstrip("+").isdigit():
                raise ConfigError(f"{key}.prefixes", f"{p!r} is not digits")
        if gw.strip < 0:
            raise ConfigError(f"{key}.strip", "must be >= 0")
        gw.codecs = [c.upper() for c in gw.codecs]
        if not gw.codecs:
            raise ConfigError(f"{key}.codecs", "at least one codec is needed")
        for c in gw.codecs:
            if c not in KNOWN_CODECS:
                raise ConfigError(
                    f"{key}.codecs",
                    f"{c!r} is not implemented; the media engine has {', '.join(KNOWN_CODECS)}",
                )
        if gw.timeout_s < 1:
            raise ConfigError(f"{key}.timeout_s", "must be >= 1")
        if gw.retries < 1:
            raise ConfigError(f"{key}.retries", "must be >= 1 (the number of tries)")
        if gw.password is not None and gw.username is None:
            raise ConfigError(f"{key}.username", "required when a password is set")


# --------------------------------------------------------------------------- generated account

_ALNUM_UPPER = string.ascii_uppercase + string.digits
_TOKEN_CHARS = string.ascii_letters + string.digits


def generate_account() -> Account:
    """A fresh account shaped like Plivo's: ``MA`` + 18 upper-case alphanumerics, 40-char token."""
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
    if layers.accounts is not None:
        cfg.accounts = layers.accounts
    if layers.gateways is not None:
        cfg.gateways = layers.gateways
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
    logging.getLogger(__name__).debug("configuration loaded from %s", path or "defaults")
    return cfg
