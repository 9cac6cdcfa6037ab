"""``softswitch serve``: one process with the SIP user agent, media, store, webhook outbox and API.

:class:`Server` builds and tears down the parts in order (store → outbox → user agent →
call manager → HTTP), so tests can run one in-process; :func:`serve` runs one until
SIGTERM/SIGINT and shuts it down gracefully:

1. stop taking calls (the API answers 503 to new calls, everything else keeps working);
2. drop queued calls; drain live calls for ``drain_timeout_s`` (``shutdown_mode='drain'``)
   or hang them up at once (``'hangup'``); whatever is left after the drain is hung up;
3. close the HTTP server, flush the webhook outbox (pending callbacks stay in the store
   and are retried by the next start), close the user agent and the store.

SIGUSR1 drains: the same stop in ``drain`` mode, announced to SIP first (OPTIONS and new
INVITEs answered 503, so a dispatcher in front sends calls elsewhere); the process exits 0.

As one of several workers (``serve --workers N``, :mod:`softswitch.workers`) the HTTP port is
shared (``SO_REUSEPORT``); with ``redis_url`` the account limits are shared
(:mod:`softswitch.cluster`), each live call is owned by its worker, and an API request about a
call another worker holds is forwarded to it through Redis and run there on a private
loopback listener (the answer comes back as that worker gave it).
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
from .api import ops as ops_page
from .api.callapi.codes import call_uuid_of
from .api.http import OPS_KEY, AuthThrottle, create_app, recording_url_signer
from .api.legacy import LegacyDialect
from .api.legacy.routes import http_dialect as legacy_http
from .api.plivo import PlivoDialect
from .api.plivo.routes import http_dialect as plivo_http
from .call import AccountLimits, CallManager
from .dialect import Dialect
from .metrics import CONTENT_TYPE_LATEST
from .netpolicy import FetchPolicy, set_default_policy
from .ops import Operations
from .store import Claim

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

    #: Header marking a request forwarded from another worker (never forwarded again).
    forwarded_header = "X-Softswitch-Forwarded"

    def __init__(self, config: Any, *, dialer: Any = None, worker: tuple[int, int] | None = None) -> None:
        self.config = config
        self._dialer = dialer
        #: ``(index, count)`` as one of ``serve --workers``; None: the only process.
        self.worker = worker
        self.cluster: Any = None  #: ``softswitch.cluster.Cluster`` with ``redis_url``
        self.private_port: int | None = None  #: loopback listener running forwarded requests
        self._client: Any = None
        self.store: Any = None
        self.outbox: Any = None
        self.ua: Any = None
        self.manager: CallManager | None = None
        self.inbound: Any = None  #: the InboundRouter when ``[[inbound]]`` routes exist
        #: The operators' view: SIP traces, metrics, the web page's live data (softswitch.ops).
        self.ops: Operations | None = None
        self.runner: web.AppRunner | None = None
        self.http_port: int | None = None
        #: Where the server may connect for users' URLs (built from ``[http]`` at start).
        self.fetch_policy = FetchPolicy()
        self.interrupted = 0
        #: The final status of each recovery BYE (call uuid -> status, None: no answer in time)
        self.recovered_byes: dict[str, int | None] = {}
        self._stopped = False
        self._lease_task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        host = self.config.http_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    async def start(self) -> None:
        from .signing import register_signer
        from .store import open_store
        from .webhooks import WebhookOutbox

        cfg = self.config
        dialects: list[Dialect] = [PlivoDialect(), LegacyDialect(), callapi.CallApiDialect()]
        # Before the outbox resumes: each stored delivery names its scheme.
        for dialect in dialects:
            for name, signer in dialect.signers.items():
                register_signer(name, signer)
        # SQLite: one server per file (exclusive lock). PostgreSQL: shared; this server owns
        # its rows as node_id under a lease, and first takes over those of dead nodes.
        self.store = open_store(cfg.store_location, node_id=self._node_id(), exclusive=True)
        try:
            await self._register_node()
        except BaseException:
            self.store.close()
            raise
        self.store.claim_dead_nodes()
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
        if getattr(cfg, "redis_url", None):
            from .cluster import Cluster
            from .workers import worker_id

            self.cluster = Cluster(cfg.redis_url, worker_id(cfg, self.worker[0] if self.worker else 0))
            await self.cluster.start()
            self.cluster.on_control = self._run_forwarded
            # The calls this worker's previous run left live are over: their ownership and
            # account slots go now rather than when their lease runs out.
            for account_id, call_uuid in interrupted:
                await self.cluster.forget(f"account:{account_id}", call_uuid)
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
            cluster=self.cluster,
            gateway_limits={gw.name: (float(gw.cps), int(gw.max_concurrent)) for gw in cfg.gateways
                            if gw.cps > 0 or gw.max_concurrent > 0},
        )
        if self.cluster is not None and getattr(self.store, "SHARED", False):
            from .cluster import RequestQueue

            queue = RequestQueue(self.cluster)
            await queue.create()
            self.manager.start_request_queue(queue)
        self.ops = Operations(self.manager, store=self.store, outbox=self.outbox)
        self.ops.attach(dialer)
        self.manager.observers.append(self.ops)
        self.ops.start()
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
            dialects=[plivo_http(), legacy_http(), callapi.http_dialect(), ops_page.http_dialect()],
            body_timeout_s=cfg.http.body_timeout_s,
            auth_throttle=AuthThrottle(cfg.http.auth_fail_limit, cfg.http.auth_fail_window_s),
            fetch_policy=self.fetch_policy,
            forward=self._forward if self.cluster is not None else None,
        )
        app[OPS_KEY] = self.ops
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        # keepalive_timeout bounds how long a connection may sit without a complete request
        # head: aiohttp arms it when the connection opens and after each response, and data
        # arriving does not re-arm it, so it is also the header timeout.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                                    keepalive_timeout=cfg.http.header_timeout_s)
        await self.runner.setup()
        # Workers share the port: the kernel spreads connections over them (SO_REUSEPORT).
        site = web.TCPSite(self.runner, cfg.http_host, cfg.http_port, reuse_port=True if self.worker is not None else None)
        await site.start()
        if self.cluster is not None:
            import aiohttp

            private = web.TCPSite(self.runner, "127.0.0.1", 0)
            await private.start()
            private_server = getattr(private, "_server", None)
            self.private_port = private_server.sockets[0].getsockname()[1] if private_server else None
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else cfg.http_port
        for sock in sockets:
            self.fetch_policy.add_own(sock.getsockname()[0], sock.getsockname()[1])
        # Recording URLs need the port really bound (http_port 0 picks one) unless the
        # public base_url is configured.
        self.manager.public_url = (cfg.base_url or self.base_url).rstrip("/")
        self._lease_task = asyncio.get_running_loop().create_task(
            self._keep_lease(dialer), name="softswitch-node-lease"
        )

    def _node_id(self) -> str | None:
        """This process's owner name in the store: ``node_id`` (default ``<hostname>-<pid>``);
        as worker ``i`` of ``serve --workers``, ``<node_id or hostname>-<i>`` (as the
        workers' cluster names them), so that workers sharing one configuration differ and a
        restarted worker recovers its own previous calls."""
        worker = getattr(self, "worker", None)  # (index, count) under serve --workers
        if worker is not None:
            from .workers import worker_id

            return worker_id(self.config, worker[0])
        return str(self.config.node_id) or None

    async def _register_node(self) -> None:
        """Take this node's lease. A lease of this ``node_id`` still held may be this very
        node's before a crash and restart: wait for it to expire (at most one lease); if its
        holder renews it meanwhile, another live server has this name (:class:`NodeInUse`)."""
        from .store import NodeInUse

        lease = self.config.node_lease_s
        deadline = asyncio.get_running_loop().time() + lease + 1.0
        while True:
            try:
                self.store.register_node(lease)
                return
            except NodeInUse:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("node %s: its lease is still held; waiting for it to expire",
                            self.store.node_id)
                await asyncio.sleep(0.5)

    async def _keep_lease(self, dialer: Any) -> None:
        """Renew this node's lease every third of it; on a shared store, take over the calls
        and callbacks of nodes whose lease expired (:meth:`take_over_dead_nodes`)."""
        lease = self.config.node_lease_s
        takeover: asyncio.Task[Claim] | None = None
        try:
            while True:
                await asyncio.sleep(lease / 3)
                try:
                    if not self.store.renew_lease():
                        # Silent for longer than the lease: a survivor may have ended our calls.
                        log.error("node %s had lost its lease; taking it again", self.store.node_id)
                        self.store.register_node(lease)
                except Exception:
                    log.exception("node lease renewal failed")
                # A takeover waits for BYE answers: in its own task, so renewals go on.
                if self.store.SHARED and not self._stopped and (takeover is None or takeover.done()):
                    if takeover is not None and not takeover.cancelled() and takeover.exception():
                        log.error("taking over dead nodes failed", exc_info=takeover.exception())
                    takeover = asyncio.get_running_loop().create_task(
                        self.take_over_dead_nodes(dialer), name="softswitch-takeover"
                    )
        finally:
            if takeover is not None and not takeover.done():
                # Claimed but not recovered: released with the lease, a survivor claims them.
                takeover.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await takeover

    async def take_over_dead_nodes(self, dialer: Any = None) -> Claim:
        """Take over the live calls and pending callbacks of dead nodes (lease expired), once:
        BYE the callees of their answered calls from the stored dialogs, close the records,
        resume their pending callbacks, then post the calls' hangup callbacks."""
        assert self.manager is not None and self.outbox is not None
        claim: Claim = self.store.claim_dead_nodes()
        if not claim:
            return claim
        if claim.calls:
            orphans = self.store.live_dialogs(calls=claim.calls)
            await self._bye_orphans(dialer or self._dialer or self.ua, orphans)
        interrupted = self.store.mark_interrupted(calls=claim.calls)
        self.store.clear_dialogs(calls=claim.calls)
        for row in self.store.pending_deliveries(kind="fetch", ids=claim.deliveries):
            self.store.finish_delivery(row["id"], "failed")
        self.outbox.resume(self.store.pending_deliveries(kind="post", ids=claim.deliveries))
        for account_id, call_uuid in interrupted:
            record = self.store.get_call(account_id, call_uuid)
            if record is not None:
                self.manager.post_interrupted_hangup(record)
            if self.cluster is not None:  # the dead worker's slots and ownership in Redis
                with contextlib.suppress(Exception):
                    await self.cluster.forget(f"account:{account_id}", call_uuid)
        return claim

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
        self.recovered_byes.update(
            {uuid: status for (uuid, _), status in zip(orphans, statuses, strict=True)}
        )
        answered = sum(1 for status in statuses if status is not None and 200 <= status < 300)
        log.warning(
            "sent a BYE to the callee of %d call(s) left up by the previous run: %d answered 2xx",
            len(orphans), answered,
        )

    # --- several workers: live-call requests run where the call lives ------------------

    def _call_in_path(self, request: web.Request) -> str | None:
        info = request.match_info
        uid = info.get("call_uuid") or info.get("request_uuid")
        if uid is None and "call_sid" in info:
            uid = call_uuid_of(info["call_sid"].removesuffix(".json"))
        return uid

    async def _call_in_form(self, request: web.Request) -> str | None:
        """The legacy API names the call in its form body (``CallUUID``/``RequestUUID``)."""
        if request.method != "POST" or request.content_type != "application/x-www-form-urlencoded":
            return None
        try:
            form = await request.post()  # cached: the handler reads the same form
        except Exception:
            return None
        value = form.get("CallUUID") or form.get("RequestUUID")
        return value if isinstance(value, str) and value else None

    @staticmethod
    def _basic_user(request: web.Request) -> str | None:
        """The account a request's Basic credentials name (checked by the worker that runs it)."""
        import base64
        import binascii

        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None

    async def _form_or_json(self, request: web.Request) -> dict[str, Any]:
        """A POST's body fields (JSON object or form), read once (the handler reads the cache)."""
        import json

        form = "application/x-www-form-urlencoded"
        # body_exists, not can_read_body: the body may have been read (and cached) already.
        if request.method not in ("POST", "PUT", "DELETE") or not request.body_exists:
            return {}
        if request.content_type not in ("application/json", form, "text/plain", ""):
            return {}  # a multipart body is left to the handler (it streams it once)
        try:
            # A JSON object whatever the Content-Type says, as the dialects read it.
            raw = (await request.read()).decode("utf-8", "replace").strip()
            if raw.startswith("{"):
                data = json.loads(raw)
            elif request.content_type == form:
                data = dict(await request.post())
            else:
                data = {}
        except Exception:
            return {}
        return data if isinstance(data, dict) else {}

    async def _room_in_request(self, request: web.Request) -> tuple[str, str] | None:
        """``(account, room name)`` when the request is about a conference room: a room in
        the path (Plivo's ``/Conference/{name}/...``) or a legacy ``/v0.1/Conference*/``
        form's ``ConferenceName``."""
        info = request.match_info
        if "name" in info and "/Conference/" in request.path:
            account = info.get("auth_id") or self._basic_user(request)
            return (account, info["name"]) if account else None
        if request.path.startswith("/v0.1/Conference"):
            form = await self._form_or_json(request)
            name = form.get("ConferenceName")
            account = self._basic_user(request)
            if isinstance(name, str) and name and account:
                return account, name
        return None

    async def _parent_in_request(self, request: web.Request) -> str | None:
        """A make-call request's ``parent_call_uuid`` (its new call should run where the
        parent, a member of an ongoing room, runs)."""
        if request.method != "POST" or not request.path.endswith("/Call/") or "call_uuid" in request.match_info:
            return None
        value = (await self._form_or_json(request)).get("parent_call_uuid")
        return value if isinstance(value, str) and value else None

    async def _owner_elsewhere(self, request: web.Request) -> str | None:
        """The live worker, other than this one, that should run ``request``: the holder of
        the call it names, of the room it names, or of the parent call it gives."""
        assert self.cluster is not None and self.manager is not None
        uid = self._call_in_path(request) or await self._call_in_form(request)
        room = None if uid is not None else await self._room_in_request(request)
        if uid is None and room is None:
            uid = await self._parent_in_request(request)
        if uid is not None and (uid in self.manager.calls or uid in self.manager.by_request):
            return None
        if room is not None and self.manager.conferences.get(*room) is not None:
            return None
        if uid is not None:
            owner = await self.cluster.owner(uid)
            if owner is None and await self.manager.take_waiting(uid) is not None:
                return None  # it waited on the shared request queue: now queued here
        elif room is not None:
            owner = await self.cluster.room_owner(*room)
        else:
            return None
        # A dead owner (its lease gone) cannot answer: answered here (not live: 404).
        if owner is None or owner == self.cluster.worker_id or not await self.cluster.alive(owner):
            return None
        return str(owner)

    async def _forward(self, request: web.Request) -> web.StreamResponse | None:
        """A request naming a call (or a conference room, or a make-call request's parent
        call) this worker does not hold but another does: run it there (``softswitch.cluster``
        control stream) and answer what that worker answered."""
        if self.cluster is None or self.manager is None or self.forwarded_header in request.headers:
            return None
        try:
            owner = await self._owner_elsewhere(request)
        except Exception as exc:  # Redis away: this worker answers for what it holds
            log.warning("%s %s: cluster lookup failed: %s", request.method, request.path, exc)
            return None
        if owner is None:
            return None
        import base64

        body = await request.read()
        payload = {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k: v for k, v in request.headers.items()
                        if k.lower() in ("authorization", "content-type", "accept")},
            "body": base64.b64encode(body).decode(),
        }
        try:
            answer = await self.cluster.forward(owner, payload)
        except Exception as exc:  # ControlTimeout, or Redis away
            log.warning("%s %s: worker %s did not answer: %s", request.method, request.path, owner, exc)
            return None  # answered here: the call is not live on this worker (404)
        if "error" in answer:
            return None
        return web.Response(status=int(answer["status"]), body=base64.b64decode(answer["body"]),
                            headers={k: v for k, v in answer.get("headers", {}).items()})

    async def _run_forwarded(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run a request another worker forwarded, on the private loopback listener."""
        import base64

        if "op" in payload and self.manager is not None:  # an operation, not an HTTP request
            return await self.manager.run_control(payload)
        if self._client is None or self.private_port is None:
            raise RuntimeError("not serving HTTP yet")
        headers = dict(payload.get("headers", {}))
        headers[self.forwarded_header] = self.cluster.worker_id
        async with self._client.request(
            payload["method"], f"http://127.0.0.1:{self.private_port}{payload['path']}",
            headers=headers, data=base64.b64decode(payload.get("body", "")),
        ) as resp:
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "allow", "retry-after")}
            return {"status": resp.status, "headers": kept, "body": base64.b64encode(body).decode()}

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
            "status": "draining" if self._stopped else "ok",
            "worker": self.cluster.worker_id if self.cluster is not None else None,
            "registrations": registrations() if callable(registrations) else [],
            "gateways": pings() if callable(pings) else [],
            "registered_users": len({b["user"] for b in phones}),
        })

    async def _ready(self, request: web.Request) -> web.Response:
        """``GET /ready``: 200 while the server takes calls and its store answers; 503 while
        it drains or shuts down, or when the store does not answer (readiness, for a load
        balancer; ``/health`` is liveness)."""
        reasons = []
        manager = self.manager
        accepting = not self._stopped and manager is not None and manager.accepting
        if not accepting:
            reasons.append("not accepting calls (shutting down)")
        try:
            self.store.call_account("")  # one query
        except Exception as exc:
            reasons.append(f"store unreachable: {exc}")
        body = {"status": "unavailable" if reasons else "ready", "accepting": accepting, "reasons": reasons}
        return web.json_response(body, status=200 if not reasons else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text format (:mod:`softswitch.metrics`)."""
        if self.ops is None:
            return web.Response(status=503, text="not started\n")
        body = self.ops.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

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
        self._stopped = True  # no more takeovers; the lease is renewed through the drain
        cfg = self.config
        mode = mode or cfg.shutdown_mode
        drain = cfg.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self.set_unavailable()
        if self.manager is not None:
            self.manager.accepting = False
            try:
                await self.manager.shutdown(mode, drain)
            except Exception:
                log.exception("call manager shutdown failed")
        if self.ops is not None:
            await self.ops.stop()  # also ends the page's event streams
        if self._client is not None:
            await self._client.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.close()
        if self.outbox is not None:
            try:
                await self.outbox.close(drain)
            except Exception:
                log.exception("webhook outbox close failed")
        if self.ua is not None:
            with contextlib.suppress(Exception):
                await self.ua.close()
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.release_node()  # what is left pending is claimable at once
            self.store.close()

    def set_unavailable(self) -> None:
        """Tell SIP peers we take no new calls: OPTIONS and out-of-dialog INVITEs get 503."""
        endpoint = getattr(getattr(self.ua, "sip", None), "endpoint", None)
        if endpoint is not None:
            endpoint.unavailable = True

    async def drain(self) -> None:
        """SIGUSR1: stop taking calls (SIP 503, API 503), let live calls finish (at most
        ``drain_timeout_s``, then they are hung up), then stop."""
        await self.stop("drain")

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(config: Any, *, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None,
                dialer: Any = None, worker: tuple[int, int] | None = None) -> None:
    """Run a :class:`Server` until SIGTERM/SIGINT (or ``stop`` is set), then shut down
    gracefully; SIGUSR1 drains (:meth:`Server.drain`)."""
    server = Server(config, dialer=dialer, worker=worker)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    draining: list[bool] = []

    def drain() -> None:
        draining.append(True)
        server.set_unavailable()  # at once: the next OPTIONS probe already gets 503
        stop.set()

    for sig, action in ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set), (signal.SIGUSR1, drain)):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, action)
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
        print("softswitch: draining" if draining else "softswitch: shutting down", file=sys.stderr, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop("drain" if draining else None)


def run_server(config: Any, *, worker: tuple[int, int] | None = None) -> int:
    """Blocking entry point for the CLI: run :func:`serve`; exit status 0 after a clean stop."""
    asyncio.run(serve(config, worker=worker))
    return 0
