"""``softswitch serve``: one process with the SIP user agent, media, store, webhook outbox and API.

:class:`Server` builds and tears down the parts in order (store → outbox → user agent →
call manager → HTTP), so tests can run one in-process; :func:`serve` runs one until
SIGTERM/SIGINT and shuts it down gracefully:

1. stop taking calls (the API answers 503 to new calls, everything else keeps working);
2. drop queued calls; drain live calls for ``drain_timeout_s`` (``shutdown_mode='drain'``)
   or hang them up at once (``'hangup'``); whatever is left after the drain is hung up;
3. close the HTTP server, flush the webhook outbox (pending callbacks stay in the store
   and are retried by the next start), close the user agent and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from sip import causes

from .api import callapi
from .api.http import AuthThrottle, create_app, recording_url_signer
from .api.legacy import LegacyDialect
from .api.legacy.routes import http_dialect as legacy_http
from .api.plivo import PlivoDialect
from .api.plivo.routes import http_dialect as plivo_http
from .call import AccountLimits, CallManager
from .dialect import Dialect
from .netpolicy import FetchPolicy, set_default_policy

log = logging.getLogger("softswitch.server")

__all__ = ["Server", "serve", "run_server"]


def _accounts(config: Any) -> list[AccountLimits]:
    out = []
    for acc in config.accounts:
        cps = config.limits.cps if acc.cps is None else acc.cps
        conc = config.limits.max_concurrent if acc.max_concurrent is None else acc.max_concurrent
        out.append(AccountLimits(acc.auth_id, acc.auth_token, float(cps), int(conc)))
    return out


def _build_kwargs(cls: Any, **values: Any) -> dict[str, Any]:
    """Keep only the keyword arguments ``cls`` (a dataclass) knows: the parts evolve apart."""
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in values.items() if k in names}
    return values


def build_user_agent(config: Any) -> Any:
    """The SIP user agent (``softswitch.ua``: SIP with media) configured from :class:`softswitch.config.Config`."""
    from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig

    media_cfg = None
    try:
        from media.engine import MediaConfig

        media_cfg = MediaConfig(
            **_build_kwargs(
                MediaConfig,
                bind_host=config.sip_host,
                advertised_host=config.public_host,
                port_min=config.rtp_port_min,
                port_max=config.rtp_port_max,
                rtp_port_min=config.rtp_port_min,
                rtp_port_max=config.rtp_port_max,
            )
        )
    except ImportError:  # pragma: no cover - the media engine is optional for signalling
        media_cfg = None
    gateways = []
    for gw in config.gateways:
        prefixes = list(getattr(gw, "prefixes", None) or ([gw.prefix] if gw.prefix else []))
        gateways.append(
            GatewayConfig(
                **_build_kwargs(
                    GatewayConfig,
                    name=gw.name,
                    host=gw.host,
                    port=gw.port,
                    transport=gw.transport,
                    username=gw.username,
                    password=gw.password,
                    realm=gw.realm,
                    prefix=prefixes if len(prefixes) > 1 else (prefixes[0] if prefixes else ""),
                    strip=gw.strip,
                    add_prefix=gw.add_prefix,
                    from_domain=gw.from_domain,
                    p_asserted_identity=gw.p_asserted_identity,
                    register=gw.register,
                    register_expires=gw.register_expires,
                    ping=gw.ping,
                    tls_server_name=getattr(gw, "tls_server_name", None),
                    keepalive=getattr(gw, "keepalive", 0.0),
                )
            )
        )
    ua_cfg = UserAgentConfig(
        **_build_kwargs(
            UserAgentConfig,
            host=config.sip_host,
            port=config.sip_port,
            transports=tuple(t for t in config.sip_transports if t in ("udp", "tcp", "tls"))
            or ("udp",),
            public_host=config.public_host,
            public_hosts={
                transport: host
                for transport, host in (("udp", config.public_host_udp), ("tcp", config.public_host_tcp))
                if host
            },
            user_agent=config.user_agent,
            session_expires=config.sip_session_expires,
            allowed_peers=list(config.sip_allowed_peers),
            out_of_dialog_rate=config.sip_out_of_dialog_rate,
            out_of_dialog_burst=float(config.sip_out_of_dialog_burst),
            gateways=gateways,
            media=media_cfg,
            gateway_codecs={gw.name: list(gw.codecs) for gw in config.gateways if gw.codecs},
            srtp=getattr(config, "srtp", "off"),
            gateway_srtp={gw.name: getattr(gw, "srtp", "off") for gw in config.gateways},
            gateway_ring_timeout={gw.name: float(gw.timeout_s) for gw in config.gateways},
            rtp_timeout_s=getattr(config, "rtp_timeout_s", 60.0),
            rtp_hold_timeout_s=getattr(config, "rtp_hold_timeout_s", 600.0),
            accept_inbound=bool(getattr(config, "inbound", None)),
            tls_port=getattr(config, "sip_tls_port", 5061),
            tls_cert=getattr(config, "tls_cert", None),
            tls_key=getattr(config, "tls_key", None),
            tls_ca=getattr(config, "tls_ca", None),
            tls_verify=getattr(config, "tls_verify", True),
            users={u.name: u.password for u in getattr(config, "users", [])},
            registrar_realm=getattr(config, "registrar_realm", None),
            registrar_min_expires=getattr(config, "registrar_min_expires", 60),
            registrar_max_expires=getattr(config, "registrar_max_expires", 3600),
        )
    )
    return UserAgent(ua_cfg)


class Server:
    """Everything ``serve`` runs, startable and stoppable in-process.

    ``dialer`` replaces the SIP user agent (tests); ``None`` builds the real one.
    """

    #: How long a start waits for the callees of calls a crash left up to answer our BYE.
    recovery_bye_timeout_s = 4.0

    def __init__(self, config: Any, *, dialer: Any = None) -> None:
        self.config = config
        self._dialer = dialer
        self.store: Any = None
        self.outbox: Any = None
        self.ua: Any = None
        self.manager: CallManager | None = None
        self.inbound: Any = None  #: the InboundRouter when ``[[inbound]]`` routes exist
        self.runner: web.AppRunner | None = None
        self.http_port: int | None = None
        #: Where the server may connect for users' URLs (built from ``[http]`` at start).
        self.fetch_policy = FetchPolicy()
        self.interrupted = 0
        #: The final status of each recovery BYE (call uuid -> status, None: no answer in time)
        self.recovered_byes: dict[str, int | None] = {}
        self._stopped = False

    @property
    def base_url(self) -> str:
        host = self.config.http_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    async def start(self) -> None:
        from .signing import register_signer
        from .store import CallStore
        from .webhooks import WebhookOutbox

        cfg = self.config
        dialects: list[Dialect] = [PlivoDialect(), LegacyDialect(), callapi.CallApiDialect()]
        # Before the outbox resumes: each stored delivery names its scheme.
        for dialect in dialects:
            for name, signer in dialect.signers.items():
                register_signer(name, signer)
        self.store = CallStore(cfg.db_path, exclusive=True)  # one server per database
        # The answered calls a crash left up: their callees are still in the call.
        orphans = self.store.live_dialogs()
        # Every URL the server fetches or posts to is checked against this policy; the own
        # HTTP address is added once the listening socket is bound (softswitch.netpolicy).
        self.fetch_policy = FetchPolicy(cfg.http.fetch_deny, cfg.http.fetch_allow)
        set_default_policy(self.fetch_policy)
        self.outbox = WebhookOutbox(
            self.store,
            timeout_s=cfg.webhook_timeout_s,
            retries=cfg.webhook_retries,
            backoff_s=cfg.webhook_backoff_s,
            backoff_max_s=getattr(cfg, "webhook_backoff_max_s", 60.0),
            user_agent=cfg.user_agent,
            auth_token_for=self._auth_token_for,
            fetch_policy=self.fetch_policy,
        )
        await self.outbox.start()
        if self._dialer is None:
            self.ua = build_user_agent(cfg)
            await self.ua.start()
            dialer = self.ua
        else:
            dialer = self._dialer
        await self._bye_orphans(dialer, orphans)
        # Calls a previous process left live died with it (their dialogs and media are gone).
        interrupted = self.store.mark_interrupted()
        self.store.clear_dialogs()
        self.interrupted = len(interrupted)
        if interrupted:
            log.warning("%d call(s) left live by the previous run were closed", len(interrupted))
        self.manager = CallManager(
            self.store,
            self.outbox,
            dialer,
            dialect=dialects,
            accounts=_accounts(cfg),
            max_concurrent=cfg.limits.max_concurrent,
            max_queue=cfg.limits.max_queue,
            answer_url_attempts=cfg.answer_url_attempts,
            answer_url_deadline_s=cfg.answer_url_deadline_s,
            data_dir=cfg.data_dir,
            public_url=cfg.base_url,
        )
        self.manager.user_accounts = {u.name: u.account for u in getattr(cfg, "users", []) if u.account}
        # Answered calls run their Plivo XML (softswitch.callcontrol); a dialer without
        # media streams (a test double) has its calls held, as before the interpreter.
        self.manager.app_runner = self.manager.run_xml
        if getattr(cfg, "inbound", None):
            # [[inbound]]: the user agent takes INVITEs; the router picks their application.
            from .inbound import InboundRouter

            self.inbound = InboundRouter(self.manager, cfg.inbound)
            if hasattr(dialer, "on_incoming"):
                dialer.on_incoming = self.inbound.on_incoming
        for account_id, call_uuid in interrupted:
            # hangup_url fires exactly once per call, however it ends: a crash included.
            record = self.store.get_call(account_id, call_uuid)
            if record is not None:
                self.manager.post_interrupted_hangup(record)
        Path(self.manager.data_dir, "recordings").mkdir(parents=True, exist_ok=True)
        if cfg.http.recording_url_ttl_s > 0:
            self.manager.recording_url_signer = recording_url_signer(self.manager, cfg.http.recording_url_ttl_s)
        app = create_app(
            self.manager, self.store, bulk_max=cfg.limits.bulk_max,
            digits_tone_ms=cfg.send_digits_default_tone_ms,
            dialects=[plivo_http(), legacy_http(), callapi.http_dialect()],
            body_timeout_s=cfg.http.body_timeout_s,
            auth_throttle=AuthThrottle(cfg.http.auth_fail_limit, cfg.http.auth_fail_window_s),
            fetch_policy=self.fetch_policy,
        )
        app.router.add_get("/health", self._health)
        # keepalive_timeout bounds how long a connection may sit without a complete request
        # head: aiohttp arms it when the connection opens and after each response, and data
        # arriving does not re-arm it, so it is also the header timeout.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                                    keepalive_timeout=cfg.http.header_timeout_s)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.http_host, cfg.http_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else cfg.http_port
        for sock in sockets:
            self.fetch_policy.add_own(sock.getsockname()[0], sock.getsockname()[1])
        # Recording URLs need the port really bound (http_port 0 picks one) unless the
        # public base_url is configured.
        self.manager.public_url = (cfg.base_url or self.base_url).rstrip("/")

    async def _bye_orphans(self, dialer: Any, orphans: list[tuple[str, dict[str, Any]]]) -> None:
        """Send a BYE (``Reason: Q.850;cause=41``) to the callee of each call the previous
        process left answered, all at once, and wait for their answers at most
        :attr:`recovery_bye_timeout_s`; the records are closed afterwards as for any call
        a crash interrupted."""
        send_byes = getattr(dialer, "send_byes", None)
        if not orphans or send_byes is None:
            return
        statuses = await send_byes(
            [state for _, state in orphans],
            cause=causes.NORMAL_TEMPORARY_FAILURE,
            timeout=self.recovery_bye_timeout_s,
        )
        self.recovered_byes = {uuid: status for (uuid, _), status in zip(orphans, statuses, strict=True)}
        answered = sum(1 for status in statuses if status is not None and 200 <= status < 300)
        log.warning(
            "sent a BYE to the callee of %d call(s) left up by the previous run: %d answered 2xx",
            len(orphans), answered,
        )

    async def _health(self, request: web.Request) -> web.Response:
        """``GET /health``: dialect-neutral liveness, the gateways' registrations (``state``:
        registered, registering, failed, unregistering, unregistered) and the health their
        OPTIONS pings see (``up``), and how many of the registrar's users have a phone
        registered (``registered_users``; who and where is not shown here)."""
        registrations = getattr(self.ua, "registrations", None)
        pings = getattr(self.ua, "gateways", None)
        bindings = getattr(self.ua, "bindings", None)
        phones = bindings() if callable(bindings) else []
        return web.json_response({
            "status": "ok",
            "registrations": registrations() if callable(registrations) else [],
            "gateways": pings() if callable(pings) else [],
            "registered_users": len({b["user"] for b in phones}),
        })

    def _auth_token_for(self, call_uuid: str) -> str | None:
        """The current auth token of the account a call belongs to (re-signing resumed
        webhooks), or None when the call or its account is gone."""
        account_id = self.store.call_account(call_uuid)
        for acc in self.config.accounts:
            if acc.auth_id == account_id:
                return str(acc.auth_token)
        return None

    async def stop(self, mode: str | None = None, drain_timeout_s: float | None = None) -> None:
        """Graceful shutdown; see the module docstring. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        cfg = self.config
        mode = mode or cfg.shutdown_mode
        drain = cfg.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        if self.manager is not None:
            self.manager.accepting = False
            try:
                await self.manager.shutdown(mode, drain)
            except Exception:
                log.exception("call manager shutdown failed")
        if self.runner is not None:
            await self.runner.cleanup()
        if self.outbox is not None:
            try:
                await self.outbox.close(drain)
            except Exception:
                log.exception("webhook outbox close failed")
        if self.ua is not None:
            with contextlib.suppress(Exception):
                await self.ua.close()
        if self.store is not None:
            self.store.close()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(config: Any, *, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None,
                dialer: Any = None) -> None:
    """Run a :class:`Server` until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    server = Server(config, dialer=dialer)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await server.start()
        ua_port = getattr(server.ua, "local_port", config.sip_port)
        print(f"softswitch: HTTP API on {server.base_url} (OpenAPI at {server.base_url}/openapi.json), "
              f"SIP on {config.sip_host}:{ua_port}", file=sys.stderr, flush=True)
        if getattr(config, "generated", False) and config.accounts:
            # Printed once: the generated account is persisted next to the database and
            # reloaded silently by later starts (softswitch.config).
            acc = config.accounts[0]
            print(f"softswitch: generated account auth_id={acc.auth_id} auth_token={acc.auth_token}"
                  + (f" (saved in {config.account_file})" if getattr(config, "account_file", None) else ""),
                  file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        print("softswitch: shutting down", file=sys.stderr, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()


def run_server(config: Any) -> int:
    """Blocking entry point for the CLI: run :func:`serve`; exit status 0 after a clean stop."""
    asyncio.run(serve(config))
    return 0
