"""The settings themselves: dataclasses with their defaults and docstrings, and ``ConfigError``.

Nothing here reads a file or the environment (``_load``) or judges a value (``_validate``): a
:class:`Config` built in code, as the tests and an embedding application do, is just this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from softswitch.config._hostport import format_hostport


class ConfigError(ValueError):
    """A configuration value is invalid; ``key`` names it the way the user wrote it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass
class Account:
    """An API account: the HTTP API's Basic credentials and its own limits.

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
    FreeSWITCH dial-plan rules the legacy framework's ``Gateways`` parameter relied on.
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
    """Keep a registration with the trunk (REGISTER with ``username``/``password``, refreshed
    before it lapses); calls through it fail at once while it is not registered."""
    register_expires: int = 3600
    """The registration interval asked for, in seconds (the registrar may grant less)."""
    ping: float = 0.0
    """Seconds between OPTIONS pings to the gateway (0 = none): while it does not answer, calls
    through it fail at once (NETWORK_OUT_OF_ORDER) and failover moves on."""
    srtp: str = "off"
    """SRTP with SDES (RFC 4568) on calls through this trunk: ``off``, ``optional`` (RTP/AVP
    offer with ``a=crypto``, SRTP if the trunk answers one) or ``mandatory`` (RTP/SAVP; a
    plain answer ends the call with ``INCOMPATIBLE_DESTINATION``)."""
    tls_server_name: str | None = None
    """With ``transport = "tls"``: the name the trunk's certificate must carry (and SNI), when
    it is not ``host`` (e.g. ``host`` is an address). Default: ``host``."""
    cps: float = 0.0
    """New calls per second through this trunk (0 = no limit); across workers with a
    ``redis_url``. A call over it waits for a token (within its ring timeout)."""
    max_concurrent: int = 0
    """Calls up at once through this trunk (0 = no limit); across workers with a
    ``redis_url``. A call over it fails over to its next gateway, else ends
    SWITCH_CONGESTION."""
    keepalive: float = 0.0
    """With ``transport = "tcp"``/``"tls"``: seconds between RFC 5626 keep-alives (CRLFCRLF) on
    the connection to the trunk (0 = none). An unanswered one (no CRLF within 10 s) closes the
    connection, and a registration that used it registers again at once on a new one."""

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
class User:
    """A phone user of the registrar (``[[users]]``): the phone REGISTERs as
    ``sip:<name>@<registrar_realm>`` with digest ``name``/``password``; calls to
    ``user/<name>`` (or ``sip:<name>@<our address>``) reach its registered phones. ``account``
    (an auth id; empty: any): only that account's calls may reach the user."""

    name: str
    password: str
    account: str = ""


@dataclass
class InboundRoute:
    """Where an inbound call goes: the called number (the Request-URI user) picks the
    application. ``number`` matches exactly, else ``prefix`` by leading digits (the longest
    wins; exact numbers first); the answer document runs in ``dialect``'s vocabulary (the name
    of a served dialect) for ``account`` (its auth id; empty: the first account)."""

    answer_url: str
    number: str = ""
    prefix: str = ""
    answer_method: str = "POST"
    hangup_url: str | None = None
    hangup_method: str = "POST"
    dialect: str = ""  #: a served dialect's name; empty: the server's default dialect
    account: str = ""

    def match_length(self, user: str) -> int | None:
        """How well this route matches the called ``user``: ``len + 1000`` for the exact
        number, the prefix length for a prefix, None for no match."""
        if self.number:
            return 1000 + len(self.number) if user == self.number else None
        if self.prefix and user.startswith(self.prefix):
            return len(self.prefix)
        return None


def select_inbound(routes: list[InboundRoute], user: str) -> InboundRoute | None:
    """The route for a call to ``user``: its exact number, else the longest matching prefix
    (config order among equals), else None."""
    best: tuple[int, int, InboundRoute] | None = None
    for index, route in enumerate(routes):
        length = route.match_length(user)
        if length is not None and (best is None or (length, -index) > (best[0], -best[1])):
            best = (length, index, route)
    return best[2] if best is not None else None


@dataclass
class Limits:
    """Global admission limits; an account may override ``cps`` and ``max_concurrent``."""

    cps: float = 10.0
    """Calls per second per account; 0 = unlimited."""
    max_concurrent: int = 1000
    max_queue: int = 10000
    bulk_max: int = 1000
    """Most destinations in one bulk request (one API call to several numbers): 1000 by default."""


#: Networks the server never fetches from or posts to unless ``fetch_allow`` names them:
#: link-local (where cloud metadata services live, 169.254.169.254), IPv6 link-local,
#: and the unspecified addresses. Loopback stays allowed: tests and single-host
#: installations run their webhook servers there. The server's own HTTP listening
#: address and port are refused as well (see :class:`HttpSettings`).
DEFAULT_FETCH_DENY = ["169.254.0.0/16", "fe80::/10", "0.0.0.0/32", "::/128", "fd00:ec2::254/128"]


@dataclass
class HttpSettings:
    """The ``[http]`` table: limits of the HTTP API and of the URLs the server fetches."""

    body_timeout_s: float = 30.0
    """A request body not received in full within this many seconds is answered 408 and its
    connection closed."""
    header_timeout_s: float = 15.0
    """A connection that has not sent a complete request head within this many seconds of
    opening (or of its previous response) is closed; also the idle keep-alive time."""
    recording_url_ttl_s: int = 86400
    """When > 0, the recording URLs handed out (API answers, callbacks) are signed and expire
    after this many seconds: anyone holding one may fetch the file without credentials until
    then (webhook receivers, ``<Play>``). 0: bare URLs, which need the owning account's Basic
    credentials (the bare URL always does)."""
    fetch_deny: list[str] = field(default_factory=lambda: list(DEFAULT_FETCH_DENY))
    """Networks (CIDR) the server never connects to for a callback or a document/audio URL."""
    fetch_allow: list[str] = field(default_factory=list)
    """Networks allowed even if ``fetch_deny`` (or the own-address rule) covers them."""
    auth_fail_limit: int = 20
    """Failed Basic-auth attempts per source address within ``auth_fail_window_s`` before that
    address is answered 429 (0: no limit)."""
    auth_fail_window_s: float = 60.0


@dataclass
class Config:
    """Everything the ``serve`` process needs; see ``softswitch.example.toml`` for each key."""

    http_host: str = "127.0.0.1"
    http_port: int = 8088
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    sip_transports: list[str] = field(default_factory=lambda: ["udp", "tcp"])
    public_host: str | None = None
    sip_session_expires: int = 1800
    """RFC 4028 session interval (s) every INVITE asks for, with us as refresher: refreshed
    at half of it, a call whose refresh fails ends RECOVERY_ON_TIMER_EXPIRE. 0 = off; else at
    least 90 (RFC 4028 §4 Min-SE)."""
    sip_allowed_peers: list[str] = field(default_factory=list)
    """Networks (``"10.0.0.0/8"``, ``"192.0.2.7"``) whose SIP requests are served; requests
    from elsewhere are dropped without an answer (an INVITE gets 403 when ``inbound`` routes
    exist, within the rate below). The gateways' addresses are always allowed;
    responses and requests inside our own calls are matched, never filtered. Empty (the
    default): any source, only the rate limit below applies."""
    sip_out_of_dialog_rate: float = 5.0
    """Answers per second per source address to SIP requests outside our calls (OPTIONS, an
    unsolicited INVITE's 603, 400s, 481s); over it the request is dropped. 0 = no limit."""
    sip_out_of_dialog_burst: int = 10
    """How many such answers a source may draw at once before the rate applies."""
    rtp_port_min: int = 16384
    rtp_port_max: int = 32767
    rtp_timeout_s: float = 60.0
    """An answered call with no RTP from the callee for this long is hung up (BYE,
    ``MEDIA_TIMEOUT``); 0 = off."""
    rtp_hold_timeout_s: float = 600.0
    """The same while the call is on hold (SDP not ``sendrecv``, or c=0.0.0.0); 0 = off."""
    srtp: str = "off"
    """SRTP policy of calls dialled to a SIP URI directly, through no gateway (as
    :attr:`Gateway.srtp`)."""
    db_path: str = "softswitch.db"
    store_url: str = ""
    """Where call records, dialogs and the webhook outbox live: ``sqlite:///path`` or
    ``postgresql://user@host:port/db`` (shared by several servers). Empty: SQLite at
    ``db_path``."""
    node_id: str = ""
    """This server's name as the owner of its calls and callbacks in the store; empty:
    ``<hostname>-<pid>``."""
    node_lease_s: float = 15.0
    """The lease a server renews on its node row (every third of it); a server silent for
    longer is dead and a survivor on the same PostgreSQL takes its calls over."""
    data_dir: str = "data"
    base_url: str | None = None
    accounts: list[Account] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    http: HttpSettings = field(default_factory=HttpSettings)
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
    inbound: list[InboundRoute] = field(default_factory=list)
    """Inbound routes (``[[inbound]]``): with any, INVITEs from the configured gateways and
    ``sip_allowed_peers`` are taken and routed by called number (unknown numbers get 404)."""
    sip_tls_port: int = 5061
    """Port of the TLS listener (``"tls"`` in ``sip_transports`` and a ``tls_cert``); 0 = any."""
    tls_cert: str | None = None
    """Our certificate chain (PEM file): served by the TLS listener, and shown to servers
    that ask for a client certificate. Without it TLS is outbound only (no listener)."""
    tls_key: str | None = None
    """The private key of ``tls_cert`` (PEM file; default: in ``tls_cert``)."""
    tls_ca: str | None = None
    """CA certificates (PEM file) that servers' certificates are verified by; default: the
    system's store."""
    tls_verify: bool = True
    """Verify servers' certificates and names (false: anyone is trusted; for tests only)."""
    public_host_udp: str | None = None
    """Address written in Via/Contact of SIP over UDP instead of ``public_host`` (a NAT that
    maps each transport to its own public address). SDP still carries ``public_host``."""
    public_host_tcp: str | None = None
    """The same for SIP over TCP."""
    workers: int = 0
    """Worker processes of ``serve`` (``--workers``): worker ``i`` takes SIP port
    ``sip_port + i`` and the ``i``-th slice of the RTP range, all share the HTTP port
    (``SO_REUSEPORT``). 0 = one per core with a shared store and a ``redis_url``, else 1."""
    redis_url: str | None = None
    """Redis shared by the workers (``redis://host:6379/0``, ``unix:///run/redis.sock``):
    per-account calls-per-second and concurrency limits across workers, live-call ownership,
    and live-call control forwarded to the worker that holds the call. None: one process,
    everything in memory."""

    users: list[User] = field(default_factory=list)
    """Phone users of the registrar (``[[users]]``); none: REGISTER is not served (405)."""
    registrar_realm: str | None = None
    """Digest realm of the registrar and host of its users' addresses-of-record
    (``sip:alice@REALM``); default: ``public_host``, else ``sip_host``."""
    registrar_min_expires: int = 60
    """Shortest registration accepted, seconds (a shorter one is answered 423 Min-Expires)."""
    registrar_max_expires: int = 3600
    """Longest registration granted, seconds (longer ones are shortened); also the interval
    of a REGISTER that asks for none."""

    @property
    def store_location(self) -> str:
        """The store's URL: ``store_url``, else SQLite at ``db_path``."""
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.db_path}"

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
