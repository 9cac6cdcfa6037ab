"""One validation pass over the merged :class:`Config`, after every layer is applied.

A setting that names something not implemented (a codec the media engine lacks...) is refused
here with a :class:`ConfigError` naming the key, never silently downgraded.
Case-insensitive values (transports, codecs, the log level) are normalized in place.
"""

from __future__ import annotations

import ipaddress
import re
import ssl

from sip.policy import parse_networks
from softswitch.config._model import Config, ConfigError

SIP_TRANSPORTS = ("udp", "tcp", "tls")
"""Transports the SIP user agent implements (TLS: RFC 3261 §26.2, never replaced by TCP)."""
KNOWN_CODECS = ("PCMU", "PCMA", "G722", "OPUS")
"""Codecs the media engine encodes (``media.engine.SUPPORTED_CODECS``: G.711, G.722, Opus; kept
here so reading the configuration does not load the media engine); others (G729...) are refused
rather than silently left out of the offer. A gateway's ``codecs`` list orders its offer."""
NOT_IMPLEMENTED = {
    "retries": "retrying a configured trunk is not implemented (1 = one try); the legacy API's "
    "GatewayRetries retries per request",
    "caller_id_in_from": "only true is implemented (the caller id is the From user part)",
}
SHUTDOWN_MODES = ("drain", "hangup")
SRTP_POLICIES = ("off", "optional", "mandatory")
"""SRTP (SDES) policies of a call's media (``media.sdp.SRTP_POLICIES``)."""
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def _validate(cfg: Config) -> None:
    for name in ("http_port", "sip_port"):
        port = getattr(cfg, name)
        if not 0 <= port <= 65535:  # 0 = ephemeral, handy in tests
            raise ConfigError(name, f"{port} out of range 0-65535")
    for name in ("http_host", "sip_host"):
        if not getattr(cfg, name):
            raise ConfigError(name, "empty")
    for name in ("public_host", "public_host_udp", "public_host_tcp"):
        host = getattr(cfg, name)
        if host is not None and not _is_host(host):
            raise ConfigError(name, f"{host!r} is not an IP address or a host name (no port, no scheme)")
    if not cfg.sip_transports:
        raise ConfigError("sip_transports", "at least one transport is needed")
    cfg.sip_transports = [t.lower() for t in cfg.sip_transports]
    for t in cfg.sip_transports:
        if t not in SIP_TRANSPORTS:
            raise ConfigError("sip_transports", f"{t!r} is not one of {', '.join(SIP_TRANSPORTS)}")
    _validate_tls(cfg)
    if cfg.sip_session_expires != 0 and not 90 <= cfg.sip_session_expires <= 86400:
        raise ConfigError("sip_session_expires", "must be 0 (off) or 90-86400 (RFC 4028 §4: Min-SE 90)")
    try:
        parse_networks(cfg.sip_allowed_peers)
    except ValueError as exc:
        raise ConfigError("sip_allowed_peers", str(exc)) from None
    if cfg.sip_out_of_dialog_rate < 0:
        raise ConfigError("sip_out_of_dialog_rate", "must be >= 0 (0 = no limit)")
    if cfg.sip_out_of_dialog_burst < 1:
        raise ConfigError("sip_out_of_dialog_burst", "must be >= 1")
    if not 1 <= cfg.rtp_port_min < cfg.rtp_port_max <= 65535:
        raise ConfigError(
            "rtp_ports", f"need 1 <= min < max <= 65535, got {cfg.rtp_port_min}-{cfg.rtp_port_max}"
        )
    # RFC 3550 §11: RTP takes the even port, RTCP the odd one above it: two ports per stream.
    if cfg.rtp_port_max - cfg.rtp_port_min < 1:
        raise ConfigError("rtp_ports", "the range must hold at least one RTP/RTCP pair")
    if not cfg.db_path:
        raise ConfigError("db_path", "empty")
    if cfg.workers < 0:
        raise ConfigError("workers", "must be >= 0 (0 = automatic)")
    if cfg.redis_url is not None and not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url", f"must start with redis://, rediss:// or unix://, got {cfg.redis_url!r}")
    if cfg.store_url:
        scheme = cfg.store_url.split(":", 1)[0] if ":" in cfg.store_url else ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError("store_url", "must start with sqlite:/// or postgresql://")
        if scheme == "sqlite" and not cfg.store_url.startswith("sqlite:///"):
            raise ConfigError("store_url", "a SQLite URL is sqlite:///path (sqlite:////abs/path)")
    if cfg.node_lease_s < 1:
        raise ConfigError("node_lease_s", "must be >= 1 second")
    if cfg.base_url is not None and not cfg.base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url", f"must start with http:// or https://, got {cfg.base_url!r}")
    if cfg.shutdown_mode not in SHUTDOWN_MODES:
        raise ConfigError("shutdown_mode", f"{cfg.shutdown_mode!r} is not 'drain' or 'hangup'")
    cfg.srtp = _srtp_policy("srtp", cfg.srtp)
    _validate_http(cfg)
    cfg.log_level = cfg.log_level.upper()
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"{cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    for name in ("drain_timeout_s", "webhook_backoff_s", "webhook_backoff_max_s",
                 "rtp_timeout_s", "rtp_hold_timeout_s"):
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
        if gw.transport not in SIP_TRANSPORTS:
            raise ConfigError(f"{key}.transport", f"{gw.transport!r} is not udp, tcp or tls")
        if gw.transport == "tls" and "tls" not in cfg.sip_transports:
            raise ConfigError(f"{key}.transport", 'tls needs "tls" in sip_transports')
        if gw.tls_server_name is not None and gw.transport != "tls":
            raise ConfigError(f"{key}.tls_server_name", 'only with transport = "tls"')
        if gw.register and not gw.username:
            raise ConfigError(f"{key}.username", "required when register = true")
        if not 0 <= gw.ping <= 3600:
            raise ConfigError(f"{key}.ping", f"{gw.ping} out of range 0-3600 (0 = no pings)")
        if gw.cps < 0:
            raise ConfigError(f"{key}.cps", "must be >= 0 (0 = no limit)")
        if gw.max_concurrent < 0:
            raise ConfigError(f"{key}.max_concurrent", "must be >= 0 (0 = no limit)")
        if not 0 <= gw.keepalive <= 3600:
            raise ConfigError(f"{key}.keepalive", f"{gw.keepalive} out of range 0-3600 (0 = none)")
        if gw.keepalive and gw.transport.lower() not in ("tcp", "tls"):
            raise ConfigError(f"{key}.keepalive", "CRLF keep-alives need transport tcp or tls")
        if not 1 <= gw.register_expires <= 86400:
            raise ConfigError(f"{key}.register_expires", f"{gw.register_expires} out of range 1-86400")
        for p in gw.prefixes:
            if not p.lstrip("+").isdigit():
                raise ConfigError(f"{key}.prefixes", f"{p!r} is not digits")
        gw.srtp = _srtp_policy(f"{key}.srtp", gw.srtp)
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
        if gw.retries != 1:
            raise ConfigError(f"{key}.retries", NOT_IMPLEMENTED["retries"])
        if not gw.caller_id_in_from:
            raise ConfigError(f"{key}.caller_id_in_from", NOT_IMPLEMENTED["caller_id_in_from"])
        if gw.password is not None and gw.username is None:
            raise ConfigError(f"{key}.username", "required when a password is set")
    _validate_inbound(cfg)
    _validate_users(cfg)


def _srtp_policy(key: str, value: str) -> str:
    policy = str(value).lower()
    if policy not in SRTP_POLICIES:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(SRTP_POLICIES)}")
    return policy


def _validate_http(cfg: Config) -> None:
    http = cfg.http
    for name in ("body_timeout_s", "header_timeout_s", "auth_fail_window_s"):
        if not getattr(http, name) > 0:
            raise ConfigError(f"http.{name}", f"must be > 0, got {getattr(http, name)!r}")
    if http.recording_url_ttl_s < 0:
        raise ConfigError("http.recording_url_ttl_s", "must be >= 0 (0: no signed URLs)")
    if http.auth_fail_limit < 0:
        raise ConfigError("http.auth_fail_limit", "must be >= 0 (0: no limit)")
    for name in ("fetch_deny", "fetch_allow"):
        for net in getattr(http, name):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(
                    f"http.{name}", f"{net!r} is not a network (CIDR or address)"
                ) from None


def _validate_inbound(cfg: Config) -> None:
    """``[[inbound]]``: a number or a prefix each (not both), one route per number, HTTP URLs
    and methods, an existing account. The dialect's name is checked by the server, which
    knows the dialects it serves."""
    numbers: set[str] = set()
    for i, route in enumerate(cfg.inbound):
        key = f"inbound[{i}]"
        if bool(route.number) == bool(route.prefix):
            raise ConfigError(f"{key}.number", "give exactly one of number or prefix")
        if route.number:
            if route.number in numbers:
                raise ConfigError(f"{key}.number", f"duplicate {route.number!r}")
            numbers.add(route.number)
        for name in ("answer_url", "hangup_url"):
            url = getattr(route, name)
            if name == "answer_url" or url is not None:
                if not str(url).startswith(("http://", "https://")):
                    raise ConfigError(f"{key}.{name}", f"must start with http:// or https://, got {url!r}")
        for name in ("answer_method", "hangup_method"):
            method = getattr(route, name).upper()
            if method not in ("GET", "POST"):
                raise ConfigError(f"{key}.{name}", f"must be GET or POST, got {method!r}")
            setattr(route, name, method)
        if route.account and cfg.account(route.account) is None:
            raise ConfigError(f"{key}.account", f"no account {route.account!r}")


#: A user name as the user part of a SIP URI can carry it unescaped (RFC 3261 §25.1 unreserved).
_USER_NAME = re.compile(r"^[A-Za-z0-9._~!*'()+-]{1,64}$")


def _validate_users(cfg: Config) -> None:
    """``[[users]]``: unique names a SIP URI carries as they are, a password each, an existing
    account; the registrar's intervals in order, its realm a host name or address."""
    names: set[str] = set()
    for i, user in enumerate(cfg.users):
        key = f"users[{i}]"
        if not _USER_NAME.match(user.name):
            raise ConfigError(f"{key}.name", f"{user.name!r}: use letters, digits and . _ ~ ! * ' ( ) + - (at most 64)")
        if user.name in names:
            raise ConfigError(f"{key}.name", f"duplicate {user.name!r}")
        names.add(user.name)
        if not user.password:
            raise ConfigError(f"{key}.password", "required (not empty)")
        if user.account and cfg.account(user.account) is None:
            raise ConfigError(f"{key}.account", f"no account {user.account!r}")
    if not 1 <= cfg.registrar_min_expires <= cfg.registrar_max_expires:
        raise ConfigError(
            "registrar_min_expires", "need 1 <= registrar_min_expires <= registrar_max_expires"
        )
    if cfg.registrar_realm is not None and not _is_host(cfg.registrar_realm):
        raise ConfigError("registrar_realm", f"{cfg.registrar_realm!r} is not a host name or address")


def _validate_tls(cfg: Config) -> None:
    """The TLS settings: a port in range, files that load (a bad path or PEM is refused here,
    naming the key, not at the first call), and none of them without ``tls`` to use them."""
    if not 0 <= cfg.sip_tls_port <= 65535:
        raise ConfigError("sip_tls_port", f"{cfg.sip_tls_port} out of range 0-65535")
    given = [k for k in ("tls_cert", "tls_key", "tls_ca") if getattr(cfg, k)]
    if "tls" not in cfg.sip_transports:
        if given:
            raise ConfigError(given[0], 'set, but "tls" is not in sip_transports')
        return
    if cfg.tls_key and not cfg.tls_cert:
        raise ConfigError("tls_key", "set without tls_cert")
    if cfg.tls_cert:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                cfg.tls_cert, cfg.tls_key or None
            )
        except (OSError, ssl.SSLError) as exc:
            key = "tls_cert" if isinstance(exc, FileNotFoundError) or not cfg.tls_key else "tls_key"
            raise ConfigError(key, f"cannot load the certificate and key: {exc}") from None
    if cfg.tls_ca:
        try:
            ssl.create_default_context(cafile=cfg.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls_ca", f"cannot load the CA certificates: {exc}") from None


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _is_host(text: str) -> bool:
    """An address Via sent-by and a SIP URI can carry (RFC 3261 §25.1 ``host``), IPv6 without
    brackets: ``203.0.113.5``, ``2001:db8::5``, ``sip.example.com``."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(text))
