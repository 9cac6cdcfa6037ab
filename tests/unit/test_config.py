"""Configuration: defaults < TOML < environment < flags; validation; the generated account."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from softswitch.config import (
    Config,
    ConfigError,
    Gateway,
    InboundRoute,
    load_config,
    parse_hostport,
    select_gateways,
    select_inbound,
)

REPO = Path(__file__).resolve().parents[2]

TOML = """
http_port = 9000
sip_host = "10.0.0.5"
db_path = "{db}"
webhook_retries = 2
send_digits_default_tone_ms = 2000

[limits]
cps = 5
max_concurrent = 50

[[accounts]]
auth_id = "MAFILEACCOUNT0000001"
auth_token = "file-token-0123456789"
cps = 1.5

[[accounts]]
auth_id = "MASECONDACCOUNT00002"
auth_token = "second-token-0123456789"

[[gateways]]
name = "us"
host = "sip.example.net"
prefixes = ["1"]
strip = 1
add_prefix = "00"
codecs = ["pcmu"]
transport = "TCP"

[[gateways]]
name = "any"
host = "10.1.1.1"
port = 5080
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> str:
    p = tmp_path / name
    p.write_text(text.replace("{db}", str(tmp_path / "calls.db")))
    return str(p)


def test_defaults_generate_and_persist_an_account(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    cfg = load_config(env={}, overrides={"db_path": db})
    assert isinstance(cfg, Config)
    assert (cfg.http_host, cfg.http_port, cfg.sip_port) == ("127.0.0.1", 8088, 5060)
    assert cfg.sip_transports == ["udp", "tcp"]
    assert cfg.limits.cps == 10.0 and cfg.limits.bulk_max == 1000
    assert cfg.send_digits_default_tone_ms == 250
    assert cfg.http_base_url == "http://127.0.0.1:8088"
    [acc] = cfg.accounts
    assert re.fullmatch(r"MA[A-Z0-9]{18}", acc.auth_id)
    assert len(acc.auth_token) == 40
    assert cfg.generated is True
    path = db + ".account.json"
    assert cfg.account_file == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(Path(path).read_text())["auth_id"] == acc.auth_id
    # A restart keeps it and does not claim to have generated it.
    again = load_config(env={}, overrides={"db_path": db})
    assert again.accounts[0].auth_id == acc.auth_id
    assert again.accounts[0].auth_token == acc.auth_token
    assert again.generated is False


def test_toml_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TOML), env={})
    assert cfg.http_port == 9000 and cfg.sip_host == "10.0.0.5"
    assert cfg.webhook_retries == 2 and cfg.send_digits_default_tone_ms == 2000
    assert (
        cfg.limits.cps == 5.0 and cfg.limits.max_concurrent == 50 and cfg.limits.max_queue == 10000
    )
    assert [a.auth_id for a in cfg.accounts] == ["MAFILEACCOUNT0000001", "MASECONDACCOUNT00002"]
    a0, a1 = cfg.accounts
    assert cfg.account_cps(a0) == 1.5 and cfg.account_cps(a1) == 5.0
    assert cfg.account_max_concurrent(a1) == 50
    assert cfg.generated is False and cfg.account_file is None
    us, anygw = cfg.gateways
    assert us.transport == "tcp" and us.codecs == ["PCMU"] and us.prefix == "1"
    assert anygw.port == 5080 and anygw.prefixes == [] and anygw.codecs == ["PCMU", "PCMA"]


def test_environment_beats_file_and_flags_beat_environment(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    env = {
        "SOFTSWITCH_HTTP_PORT": "9100",
        "SOFTSWITCH_SIP": "[::1]:5070",
        "SOFTSWITCH_LIMITS_CPS": "0",
        "SOFTSWITCH_SIP_TRANSPORTS": "tcp, UDP",
        "SOFTSWITCH_PUBLIC_HOST": "203.0.113.7",
        "SOFTSWITCH_AUTH_ID": "MAENVACCOUNT00000001",
        "SOFTSWITCH_AUTH_TOKEN": "env-token-0123456789",
        "SOFTSWITCH_WEBHOOK_BACKOFF_S": "0.5",
        "OTHER_VARIABLE": "ignored",
    }
    cfg = load_config(path, env=env)
    assert cfg.http_port == 9100
    assert (cfg.sip_host, cfg.sip_port) == ("::1", 5070)
    assert cfg.limits.cps == 0.0 and cfg.limits.max_concurrent == 50
    assert cfg.sip_transports == ["tcp", "udp"]
    assert cfg.public_host == "203.0.113.7"
    assert cfg.webhook_backoff_s == 0.5
    # The env account becomes the default (first) one, the file's accounts stay.
    assert [a.auth_id for a in cfg.accounts][0] == "MAENVACCOUNT00000001"
    assert len(cfg.accounts) == 3

    overrides: dict[str, object] = {
        "http": "0.0.0.0:7000",
        "rtp_ports": "20000-20100",
        "http_port": None,  # flag not given: no effect
        "auth_id": "MAFILEACCOUNT0000001",
        "auth_token": "flag-token-0123456789",
        "limits.max_queue": 7,
        "log_level": "debug",
        "base_url": "https://pbx.example.com/",
    }
    cfg = load_config(path, env=env, overrides=overrides)
    assert (cfg.http_host, cfg.http_port) == ("0.0.0.0", 7000)
    assert (cfg.rtp_port_min, cfg.rtp_port_max) == (20000, 20100)
    assert cfg.limits.max_queue == 7 and cfg.limits.cps == 0.0
    assert cfg.log_level == "DEBUG"
    assert cfg.http_base_url == "https://pbx.example.com"
    # The flag account already exists in the file: its token is replaced and it moves first.
    assert cfg.accounts[0].auth_id == "MAFILEACCOUNT0000001"
    assert cfg.accounts[0].auth_token == "flag-token-0123456789"
    # There is one default account: the flags' replaces the environment's.
    assert cfg.account("MAENVACCOUNT00000001") is None
    assert len(cfg.accounts) == 2


def test_unknown_environment_variable_is_reported_not_fatal(tmp_path: Path) -> None:
    env = {"SOFTSWITCH_HTTP_PROT": "1", "SOFTSWITCH_DB_PATH": str(tmp_path / "u.db")}
    cfg = load_config(env=env)
    assert cfg.ignored_env == ["SOFTSWITCH_HTTP_PROT"]
    assert cfg.http_port == 8088


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    cfg = load_config(env={"SOFTSWITCH_CONFIG": path})
    assert cfg.http_port == 9000


def test_gateways_from_environment_json(tmp_path: Path) -> None:
    gws = [{"name": "gw", "host": "127.0.0.1", "port": 5099, "prefix": "44"}]
    cfg = load_config(
        env={"SOFTSWITCH_GATEWAYS": json.dumps(gws), "SOFTSWITCH_DB_PATH": str(tmp_path / "g.db")}
    )
    [gw] = cfg.gateways
    assert (gw.name, gw.port, gw.prefixes) == ("gw", 5099, ["44"])


@pytest.mark.parametrize(
    ("toml", "env", "overrides", "key"),
    [
        ("http_port = 70000", {}, {}, "http_port"),
        ("htp_port = 1", {}, {}, "htp_port"),
        ('http_port = "x"', {}, {}, "http_port"),
        ("[limits]\ncps = -1", {}, {}, "limits.cps"),
        ("[limits]\nburst = 1", {}, {}, "burst"),
        ('shutdown_mode = "abort"', {}, {}, "shutdown_mode"),
        ('sip_transports = ["sctp"]', {}, {}, "sip_transports"),
        ("send_digits_default_tone_ms = 10", {}, {}, "send_digits_default_tone_ms"),
        ("rtp_port_min = 30000\nrtp_port_max = 20000", {}, {}, "rtp_ports"),
        ('base_url = "ftp://x"', {}, {}, "base_url"),
        ('[[accounts]]\nauth_id = "A"', {}, {}, "auth_token"),
        (
            '[[accounts]]\nauth_id = "A"\nauth_token = "t"\n[[accounts]]\nauth_id = "A"\nauth_token = "u"',
            {},
            {},
            "duplicate",
        ),
        ('[[gateways]]\nname = "g"', {}, {}, "host"),
        ('[[gateways]]\nname = "g"\nhost = "h"\ncodecs = ["G729"]', {}, {}, "codecs"),
        ('[[gateways]]\nname = "g"\nhost = "h"\ntransport = "sctp"', {}, {}, "transport"),
        ('[[gateways]]\nname = "g"\nhost = "h"\nprefixes = ["1a"]', {}, {}, "prefixes"),
        ('[[gateways]]\nname = "g"\nhost = "h"\nretries = 0', {}, {}, "retries"),
        ("", {"SOFTSWITCH_HTTP_PORT": "eighty"}, {}, "SOFTSWITCH_HTTP_PORT"),
        ("", {"SOFTSWITCH_AUTH_ID": "MAX"}, {}, "SOFTSWITCH_AUTH_TOKEN"),
        ("", {"SOFTSWITCH_GATEWAYS": "[{"}, {}, "SOFTSWITCH_GATEWAYS"),
        ("", {}, {"sip": "[::1"}, "--sip"),
        ("", {}, {"rtp_ports": "20000"}, "--rtp-ports"),
        ("", {}, {"auth_token": "t"}, "--auth-id"),
        ("", {}, {"nonsense": 1}, "--nonsense"),
        ("not toml [", {}, {}, "invalid TOML"),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], overrides: dict[str, Any], key: str
) -> None:
    path = write(tmp_path, 'db_path = "{db}"\n' + toml)
    with pytest.raises(ConfigError) as exc_info:
        load_config(path, env=env, overrides=overrides)
    assert key in str(exc_info.value)
    assert isinstance(exc_info.value, ValueError)


@pytest.mark.parametrize(
    ("toml", "env", "key", "why"),
    [
        (
            '[[gateways]]\nname = "g"\nhost = "h"\ntransport = "TLS"',
            {},
            "gateways[0].transport",
            'tls needs "tls" in sip_transports',
        ),
        ('tls_ca = "/nonexistent/ca.pem"', {}, "tls_ca", '"tls" is not in sip_transports'),
        (
            'sip_transports = ["udp", "tls"]\ntls_cert = "/nonexistent/cert.pem"',
            {},
            "tls_cert",
            "cannot load the certificate and key",
        ),
        (
            'sip_transports = ["tls"]\ntls_ca = "/nonexistent/ca.pem"',
            {},
            "tls_ca",
            "cannot load the CA certificates",
        ),
        (
            'sip_transports = ["tls"]\n[[gateways]]\nname = "g"\nhost = "h"\ntls_server_name = "x"',
            {},
            "gateways[0].tls_server_name",
            'only with transport = "tls"',
        ),
        (
            '[[gateways]]\nname = "g"\nhost = "h"\nregister = true',
            {},
            "gateways[0].username",
            "required when register = true",
        ),
        (
            '[[gateways]]\nname = "g"\nhost = "h"\ncodecs = ["OPUS", "G729"]',
            {},
            "gateways[0].codecs",
            "'G729' is not implemented",
        ),
        (
            "",
            {"SOFTSWITCH_GATEWAYS": '[{"name": "g", "host": "h", "register": true, "username": "u", "register_expires": 0}]'},
            "gateways[0].register_expires",
            "out of range",
        ),
        (
            '[[gateways]]\nname = "g"\nhost = "h"\nretries = 3',
            {},
            "gateways[0].retries",
            "retrying a configured trunk is not implemented",
        ),
        (
            '[[gateways]]\nname = "g"\nhost = "h"\ncaller_id_in_from = false',
            {},
            "gateways[0].caller_id_in_from",
            "only true is implemented",
        ),
    ],
)
def test_unimplemented_features_are_refused(
    tmp_path: Path, toml: str, env: dict[str, str], key: str, why: str
) -> None:
    """Never silently downgraded: TLS settings that cannot work, register is not ignored, a codec
    the media engine lacks is not left out of the offer. The error names the key."""
    path = write(tmp_path, 'db_path = "{db}"\n' + toml)
    with pytest.raises(ConfigError) as exc_info:
        load_config(path, env=env)
    assert exc_info.value.key.endswith(key), exc_info.value.key
    assert why in exc_info.value.reason


def test_gateway_register_with_username_is_accepted(tmp_path: Path) -> None:
    text = '[[gateways]]\nname = "g"\nhost = "h"\nusername = "u"\npassword = "p"\nregister = true\nregister_expires = 600'
    [gw] = load_config(write(tmp_path, 'db_path = "{db}"\n' + text), env={}).gateways
    assert gw.register is True and gw.register_expires == 600 and gw.ping == 0


def test_gateway_ping_is_checked(tmp_path: Path) -> None:
    good = '[[gateways]]\nname = "g"\nhost = "h"\nping = 30'
    [gw] = load_config(write(tmp_path, 'db_path = "{db}"\n' + good), env={}).gateways
    assert gw.ping == 30
    with pytest.raises(ConfigError) as exc_info:
        load_config(write(tmp_path, 'db_path = "{db}"\n' + good.replace("30", "-1")), env={})
    assert exc_info.value.key.endswith("gateways[0].ping")


def test_gateway_register_false_and_g711_codecs_are_accepted(tmp_path: Path) -> None:
    text = '[[gateways]]\nname = "g"\nhost = "h"\ntransport = "tcp"\nregister = false\ncodecs = ["pcma", "PCMU"]'
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n' + text), env={})
    [gw] = cfg.gateways
    assert gw.transport == "tcp" and gw.register is False and gw.codecs == ["PCMA", "PCMU"]


def test_gateway_wideband_codecs_are_accepted_in_order(tmp_path: Path) -> None:
    from media.engine import SUPPORTED_CODECS
    from softswitch.config._validate import KNOWN_CODECS

    assert KNOWN_CODECS == SUPPORTED_CODECS  # the static list follows the engine
    text = '[[gateways]]\nname = "g"\nhost = "h"\ncodecs = ["opus", "G722", "pcmu"]'
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n' + text), env={})
    [gw] = cfg.gateways
    assert gw.codecs == ["OPUS", "G722", "PCMU"]


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.toml"), env={})


def test_parse_hostport() -> None:
    assert parse_hostport("example.com", 5060) == ("example.com", 5060)
    assert parse_hostport("example.com:5080", 5060) == ("example.com", 5080)
    assert parse_hostport("[2001:db8::1]:5061", 5060) == ("2001:db8::1", 5061)
    assert parse_hostport("[::1]", 8088) == ("::1", 8088)
    assert parse_hostport("::1", 8088) == ("::1", 8088)
    assert parse_hostport("127.0.0.1:0", 1) == ("127.0.0.1", 0)
    for bad in (
        "",
        ":80",
        "host:",
        "host:99999",
        "host:x",
        "[::1",
        "[nothost]:1",
        "[::1]x",
        "1:2:zz",
    ):
        with pytest.raises(ValueError):
            parse_hostport(bad, 5060)


def test_gateway_prefix_rules() -> None:
    us = Gateway(name="us", host="a", prefixes=["1"], strip=1, add_prefix="00")
    uk = Gateway(name="uk", host="b", prefix="44")
    ny = Gateway(name="ny", host="c", prefixes=["1212", "1646"])
    anygw = Gateway(name="any", host="d")
    gws = [anygw, us, uk, ny]
    assert [g.name for g in select_gateways(gws, "12125550100")] == ["ny", "us", "any"]
    assert [g.name for g in select_gateways(gws, "+442071234567")] == ["uk", "any"]
    assert [g.name for g in select_gateways(gws, "33123")] == ["any"]
    assert [g.name for g in select_gateways([us], "33123")] == []
    assert us.rewrite("14155550100") == "004155550100"
    assert us.rewrite("+14155550100") == "004155550100"
    assert anygw.rewrite("+14155550100") == "+14155550100"
    assert uk.matches("442071234567") and not uk.matches("1")


def test_example_config_loads(tmp_path: Path) -> None:
    example = REPO / "softswitch.example.toml"
    text = example.read_text()
    # Every Config / Limits / Gateway / Account field is documented in the example.
    for name in Config.__dataclass_fields__:
        if name in ("generated", "account_file", "ignored_env", "accounts", "gateways", "limits", "inbound"):
            continue
        assert re.search(rf"^#?\s*{name}\s*=", text, re.M), name
    assert "[[inbound]]" in text
    for name in InboundRoute.__dataclass_fields__:
        assert re.search(rf"^#?\s*{name}\s*=", text, re.M), name
    cfg = load_config(str(example), env={}, overrides={"db_path": str(tmp_path / "ex.db")})
    assert cfg.accounts and cfg.gateways
    assert [r.number for r in cfg.inbound] == ["5000"]


def test_sip_session_expires_is_0_or_at_least_the_rfc_minimum(tmp_path: Path) -> None:
    db = {"db_path": str(tmp_path / "calls.db")}
    assert load_config(env={}, overrides=db).sip_session_expires == 1800
    assert load_config(env={"SOFTSWITCH_SIP_SESSION_EXPIRES": "0"}, overrides=db).sip_session_expires == 0
    with pytest.raises(ConfigError, match="sip_session_expires"):
        load_config(env={"SOFTSWITCH_SIP_SESSION_EXPIRES": "60"}, overrides=db)


def test_sip_doors_settings(tmp_path: Path) -> None:
    db = {"db_path": str(tmp_path / "calls.db")}
    cfg = load_config(env={}, overrides=db)
    assert (cfg.sip_allowed_peers, cfg.sip_out_of_dialog_rate, cfg.sip_out_of_dialog_burst) == ([], 5.0, 10)
    env = {"SOFTSWITCH_SIP_ALLOWED_PEERS": "10.0.0.0/8, 192.0.2.7"}
    assert load_config(env=env, overrides=db).sip_allowed_peers == ["10.0.0.0/8", "192.0.2.7"]
    with pytest.raises(ConfigError, match="sip_allowed_peers.*pbx.example"):
        load_config(env={"SOFTSWITCH_SIP_ALLOWED_PEERS": "pbx.example"}, overrides=db)
    with pytest.raises(ConfigError, match="sip_out_of_dialog_burst"):
        load_config(env={"SOFTSWITCH_SIP_OUT_OF_DIALOG_BURST": "0"}, overrides=db)


def test_srtp_policies_per_gateway_and_for_direct_uris(tmp_path: Path) -> None:
    text = (
        'srtp = "Optional"\n[[gateways]]\nname = "g"\nhost = "h"\nsrtp = "MANDATORY"\n'
        '[[gateways]]\nname = "plain"\nhost = "h2"\n'
    )
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n' + text), env={})
    assert cfg.srtp == "optional"
    assert [gw.srtp for gw in cfg.gateways] == ["mandatory", "off"]
    from softswitch.server import build_user_agent

    ua = build_user_agent(cfg)
    assert ua.config.srtp == "optional"
    assert ua.config.gateway_srtp == {"g": "mandatory", "plain": "off"}
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n'), env={"SOFTSWITCH_SRTP": "mandatory"})
    assert (
        cfg.srtp == "mandatory"
        and load_config(env={}, overrides={"db_path": str(tmp_path / "d.db")}).srtp == "off"
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('srtp = "sdes"', "srtp"),
        ('[[gateways]]\nname = "g"\nhost = "h"\nsrtp = "yes"', "gateways[0].srtp"),
    ],
)
def test_a_bad_srtp_policy_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match="is not one of off, optional, mandatory") as info:
        load_config(write(tmp_path, 'db_path = "{db}"\n' + toml), env={})
    assert info.value.key == key


def test_inbound_routes_pick_exact_number_then_longest_prefix(tmp_path: Path) -> None:
    routes = [
        InboundRoute(answer_url="http://a/any", prefix="5"),
        InboundRoute(answer_url="http://a/50", prefix="50"),
        InboundRoute(answer_url="http://a/5000", number="5000"),
        InboundRoute(answer_url="http://a/50-again", prefix="50"),
    ]
    assert select_inbound(routes, "5000") is routes[2]
    assert select_inbound(routes, "5001") is routes[1]  # longest prefix, config order among equals
    assert select_inbound(routes, "5999") is routes[0]
    assert select_inbound(routes, "6000") is None
    assert select_inbound(routes, "") is None
    assert select_inbound([], "5000") is None


def test_inbound_routes_load_and_are_checked(tmp_path: Path) -> None:
    db = {"db_path": str(tmp_path / "calls.db")}
    path = tmp_path / "in.toml"
    path.write_text(
        '[[accounts]]\nauth_id = "MAAAAAAAAAAAAAAAAAA1"\nauth_token = "t0ken"\n'
        '[[inbound]]\nnumber = "5000"\nanswer_url = "http://127.0.0.1:1/a"\n'
        'answer_method = "get"\ndialect = "legacy"\naccount = "MAAAAAAAAAAAAAAAAAA1"\n'
    )
    cfg = load_config(str(path), env={}, overrides=db)
    (route,) = cfg.inbound
    assert (route.number, route.answer_method, route.dialect, route.hangup_url) == ("5000", "GET", "legacy", None)
    env = {"SOFTSWITCH_INBOUND": '[{"prefix": "7", "answer_url": "https://x/y"}]'}
    assert load_config(env=env, overrides=db).inbound[0].prefix == "7"
    bad = [
        ({"answer_url": "http://x/"}, "inbound[0].number"),  # neither number nor prefix
        ({"answer_url": "http://x/", "number": "1", "prefix": "1"}, "inbound[0].number"),
        ({"answer_url": "ftp://x/", "number": "1"}, "inbound[0].answer_url"),
        ({"answer_url": "http://x/", "number": "1", "hangup_url": "x"}, "inbound[0].hangup_url"),
        ({"answer_url": "http://x/", "number": "1", "answer_method": "PUT"}, "inbound[0].answer_method"),
        ({"answer_url": "http://x/", "number": "1", "account": "nobody"}, "inbound[0].account"),
        ({"number": "1"}, "inbound[0].answer_url"),
        ({"answer_url": "http://x/", "number": "1", "nope": 1}, "inbound[0].nope"),
    ]
    for table, key in bad:
        with pytest.raises(ConfigError) as info:
            load_config(env={}, overrides={**db, "inbound": [table]})
        assert key in info.value.key, (table, info.value)


def test_tls_settings_are_read_and_checked(tmp_path: Path) -> None:
    from tests.peers.tls_certs import TestCA

    ca = TestCA(tmp_path)
    issued = ca.issue("softswitch", dns=("localhost",))
    text = (
        'sip_transports = ["udp", "TLS"]\nsip_tls_port = 5071\n'
        f'tls_cert = "{issued.cert}"\ntls_key = "{issued.key}"\ntls_ca = "{ca.cert}"\n'
        'tls_verify = true\n[[gateways]]\nname = "g"\nhost = "192.0.2.7"\nport = 5061\n'
        'transport = "tls"\ntls_server_name = "pbx.example.com"'
    )
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n' + text), env={})
    assert cfg.sip_transports == ["udp", "tls"] and cfg.sip_tls_port == 5071
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == (str(issued.cert), str(issued.key), str(ca.cert))
    [gw] = cfg.gateways
    assert (gw.transport, gw.tls_server_name) == ("tls", "pbx.example.com")
    from softswitch.server import build_user_agent

    ua = build_user_agent(cfg).config
    assert ua.transports == ("udp", "tls") and ua.tls_port == 5071 and ua.tls_verify
    assert (ua.tls_cert, ua.tls_key, ua.tls_ca) == (str(issued.cert), str(issued.key), str(ca.cert))
    assert ua.gateways[0].tls_server_name == "pbx.example.com"
    # The key of another certificate does not load: refused at start-up, naming the key.
    other = ca.issue("other")
    bad = text.replace(str(issued.key), str(other.key))
    with pytest.raises(ConfigError) as exc_info:
        load_config(write(tmp_path, 'db_path = "{db}"\n' + bad), env={})
    assert exc_info.value.key == "tls_key"
    # From the environment too.
    env = {"SOFTSWITCH_SIP_TRANSPORTS": "udp,tls", "SOFTSWITCH_TLS_VERIFY": "false"}
    cfg = load_config(write(tmp_path, 'db_path = "{db}"\n'), env=env)
    assert cfg.sip_transports == ["udp", "tls"] and cfg.tls_verify is False


def test_public_host_per_transport(tmp_path: Path) -> None:
    db = {"db_path": str(tmp_path / "calls.db")}
    cfg = load_config(env={}, overrides=db)
    assert (cfg.public_host, cfg.public_host_udp, cfg.public_host_tcp) == (None, None, None)
    env = {"SOFTSWITCH_PUBLIC_HOST": "203.0.113.7", "SOFTSWITCH_PUBLIC_HOST_TCP": "sip.example.com"}
    cfg = load_config(env=env, overrides=db)
    assert (cfg.public_host, cfg.public_host_udp, cfg.public_host_tcp) == ("203.0.113.7", None, "sip.example.com")
    from softswitch.server import build_user_agent

    ua = build_user_agent(cfg)
    assert ua.config.public_host == "203.0.113.7" and ua.config.public_hosts == {"tcp": "sip.example.com"}
    assert ua.sip.endpoint.advertised_host("udp") == "203.0.113.7"
    assert ua.sip.endpoint.advertised_host("tcp") == "sip.example.com"
    assert ua.config.media.sdp_address == "203.0.113.7"  # SDP c=/o=
    for bad in ("203.0.113.7:5060", "sip:203.0.113.7", "a b", "-x.example"):
        with pytest.raises(ConfigError, match="public_host_udp"):
            load_config(env={"SOFTSWITCH_PUBLIC_HOST_UDP": bad}, overrides=db)


def test_users_of_the_registrar_load_from_toml_and_are_checked(tmp_path: Path) -> None:
    from softswitch.config import User

    toml = tmp_path / "users.toml"
    toml.write_text(
        'registrar_realm = "pbx.example.com"\nregistrar_min_expires = 30\n'
        '[[accounts]]\nauth_id = "MAAAAAAAAAAAAAAAAAAA"\nauth_token = "t" \n'
        '[[users]]\nname = "alice"\npassword = "s1"\n'
        '[[users]]\nname = "bob"\npassword = "s2"\naccount = "MAAAAAAAAAAAAAAAAAAA"\n'
    )
    db = {"db_path": str(tmp_path / "c.db")}
    cfg = load_config(str(toml), env={}, overrides=db)
    assert cfg.users == [User("alice", "s1"), User("bob", "s2", "MAAAAAAAAAAAAAAAAAAA")]
    assert (cfg.registrar_realm, cfg.registrar_min_expires) == ("pbx.example.com", 30)
    env = {"SOFTSWITCH_USERS": '[{"name": "carol", "password": "x"}]'}
    assert load_config(env=env, overrides=db).users == [User("carol", "x")]
    bad = [
        ('[{"name": "al ice", "password": "x"}]', "users[0].name"),
        ('[{"name": "a", "password": "x"}, {"name": "a", "password": "y"}]', "users[1].name"),
        ('[{"name": "a", "password": ""}]', "users[0].password"),
        ('[{"name": "a", "password": "x", "account": "nobody"}]', "users[0].account"),
        ('[{"name": "a", "pass": "x"}]', "pass"),
    ]
    for value, key in bad:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(env={"SOFTSWITCH_USERS": value}, overrides=db)
    with pytest.raises(ConfigError, match="registrar_min_expires"):
        load_config(env={"SOFTSWITCH_REGISTRAR_MIN_EXPIRES": "7200"}, overrides=db)
