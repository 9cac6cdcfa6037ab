"""Configuration: one TOML file, ``SOFTSWITCH_*`` environment overrides, command-line flags.

Precedence, lowest first::

    dataclass defaults < TOML file < environment < overrides (CLI flags)

The TOML file uses the dataclass field names as keys at the top level, a ``[limits]`` table,
``[[accounts]]``, ``[[gateways]]``, ``[[inbound]]`` and ``[[users]]`` arrays of tables (see ``softswitch.example.toml`` at the
repository root, which documents every key).  Unknown keys are errors, so a typo never silently
falls back to a default.

Environment variables are ``SOFTSWITCH_`` + the upper-cased field name (``SOFTSWITCH_HTTP_PORT``,
``SOFTSWITCH_DB_PATH``), ``SOFTSWITCH_LIMITS_<FIELD>`` for ``[limits]``, ``SOFTSWITCH_HTTP`` /
``SOFTSWITCH_SIP`` (``HOST:PORT``), ``SOFTSWITCH_RTP_PORTS`` (``LOW-HIGH``),
``SOFTSWITCH_AUTH_ID`` + ``SOFTSWITCH_AUTH_TOKEN`` for the default account,
``SOFTSWITCH_GATEWAYS`` (a JSON list of gateway tables) and ``SOFTSWITCH_CONFIG`` (the TOML path
used when :func:`load_config` gets none).

When no account is configured anywhere, one is generated (an auth id of 20 upper-case
alphanumerics starting ``MA``, the shape the HTTP API's clients expect, and a 40-character token)
and persisted next to the database in ``<db_path>.account.json`` so that a restart keeps the same
credentials.

The package follows the seams of that work; every name is re-exported here, so callers import
from ``softswitch.config`` only:

| module | what it holds |
|---|---|
| ``_model`` | the dataclasses (:class:`Config`, :class:`Limits`, :class:`Account`, :class:`Gateway`) with defaults and docstrings, :class:`ConfigError`, :func:`select_gateways` |
| ``_hostport`` | ``HOST[:PORT]`` and ``LOW-HIGH`` parsing |
| ``_load`` | the layers (TOML, environment, flags), coercion to field types, :func:`load_config` |
| ``_validate`` | the one validation pass; refuses unimplemented settings naming the key |
| ``_account`` | the generated default account and its file |
"""

from __future__ import annotations

from softswitch.config._account import account_file_path as account_file_path
from softswitch.config._account import generate_account as generate_account
from softswitch.config._hostport import format_hostport as format_hostport
from softswitch.config._hostport import parse_hostport, parse_port_range
from softswitch.config._load import ENV_PREFIX as ENV_PREFIX
from softswitch.config._load import load_config
from softswitch.config._model import (
    Account,
    Config,
    ConfigError,
    Gateway,
    HttpSettings,
    InboundRoute,
    Limits,
    User,
    select_gateways,
    select_inbound,
)
from softswitch.config._validate import (
    KNOWN_CODECS as KNOWN_CODECS,
)
from softswitch.config._validate import (
    LOG_LEVELS as LOG_LEVELS,
)
from softswitch.config._validate import (
    NOT_IMPLEMENTED as NOT_IMPLEMENTED,
)
from softswitch.config._validate import (
    SHUTDOWN_MODES as SHUTDOWN_MODES,
)
from softswitch.config._validate import (
    SIP_TRANSPORTS as SIP_TRANSPORTS,
)

# ``ENV_PREFIX``, the ``_validate`` tables, ``format_hostport`` and the account helpers stay
# importable from here (the ``X as X`` imports above), as before the split.
__all__ = [
    "Account",
    "Config",
    "ConfigError",
    "Gateway",
    "HttpSettings",
    "InboundRoute",
    "Limits",
    "User",
    "load_config",
    "parse_hostport",
    "parse_port_range",
    "select_gateways",
    "select_inbound",
]
