"""The user's web server, for every test that needs one: a real aiohttp server on 127.0.0.1.

It serves what a test configures (XML documents, audio files, status codes, slow answers,
outages) and records every request (method, path, query, form, headers, the status it got).
Tests wait on what they expect with :meth:`WebhookReceiver.wait_for`, which wakes on each
request (an :class:`asyncio.Condition`), never on a timer.

The ``webhook_receiver`` fixture of ``tests/conftest.py`` starts them; test modules wrap it
in the fixture their dialect needs (``receiver``, ``webapp``, ``server``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from aiohttp import web
from plivo.utils.signature_v3 import validate_v3_signature

__all__ = ["Reply", "Request", "WebhookReceiver"]

#: What the receiver answers: an XML document (``str``), a status code (``int``), a
#: ``(status, body, content_type)`` tuple, any aiohttp response, or a function of the
#: :class:`Request` returning one of these (or an awaitable of one: a slow server).
Reply = Union[  # noqa: UP007 - a runtime alias, readable by Python 3.11
    str,
    int,
    tuple[int, str | bytes, str],
    web.StreamResponse,
    Callable[["Request"], Any],
]


@dataclass
class Request:
    """One request as received."""

    method: str
    path: str
    url: str  # scheme://host:port + the raw path and query, as requested (what was signed)
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    signed: bool = False  # a valid X-Plivo-Signature-V3 for the receiver's auth token
    status: int | None = None  # what it was answered (None while the answer is pending)
    failed: bool = False  # answered 503 by WebhookReceiver.fail (a simulated outage)

    @property
    def params(self) -> dict[str, str]:
        """The callback parameters: the form of a POST, the query of a GET."""
        return self.form if self.method == "POST" else self.query


@dataclass
class WebhookReceiver:
    """Serves ``routes[path]`` (else ``respond``) and records every request in ``requests``."""

    auth_token: str | None = None
    """When set, each request's Plivo V3 signature is checked (:attr:`Request.signed`)."""
    port: int = 0
    routes: dict[str, Reply] = field(default_factory=dict)
    respond: Reply = 200
    """The reply to a path without a route."""
    fail: dict[str, int] = field(default_factory=dict)
    """path -> how many more requests get a 503, as if the server were down (an outage)."""
    delays: dict[str, float] = field(default_factory=dict)
    """path -> seconds the server takes before it answers."""
    requests: list[Request] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, init=False, repr=False)

    # ----------------------------------------------------------------- life cycle

    async def start(self, port: int | None = None) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port if port is None else port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    # ----------------------------------------------------------------- what it serves

    def xml(self, path: str, document: str) -> str:
        """Serve ``document`` as application/xml at ``path``; return its URL."""
        self.routes[path] = document
        return self.url(path)

    def file(self, path: str, data: bytes, content_type: str = "audio/wav") -> str:
        """Serve ``data`` at ``path``; return its URL."""
        self.routes[path] = (200, data, content_type)
        return self.url(path)

    # ----------------------------------------------------------------- what it received

    def of(
        self,
        path: str | None = None,
        call_uuid: str | None = None,
        *,
        where: Callable[[Request], bool] | None = None,
    ) -> list[Request]:
        """Requests received (outages left out), optionally of one path, call or predicate."""
        return [
            r
            for r in self.requests
            if not r.failed
            and (path is None or r.path == path)
            and (
                call_uuid is None
                or r.params.get("CallUUID", r.params.get("call_uuid")) == call_uuid
            )
            and (where is None or where(r))
        ]

    def params(self, path: str) -> list[dict[str, str]]:
        """The parameters of each request to ``path``, in order."""
        return [r.params for r in self.of(path)]

    @property
    def bad_signatures(self) -> list[Request]:
        """Requests without a valid V3 signature (only meaningful with an ``auth_token``)."""
        return [r for r in self.requests if not r.signed]

    async def wait_for(
        self,
        where: Callable[[Request], bool] | None = None,
        timeout: float = 10.0,
        *,
        path: str | None = None,
        call_uuid: str | None = None,
        count: int = 1,
    ) -> list[Request]:
        """Wait until ``count`` requests match (see :meth:`of`); return all that match."""

        def enough() -> bool:
            return len(self.of(path, call_uuid, where=where)) >= count

        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(enough)
            except TimeoutError:
                got = [(r.path, r.params.get("Event"), r.status) for r in self.requests]
                raise AssertionError(
                    f"not {count} matching request(s) for {path or 'any path'} within {timeout}s; got {got}"
                ) from None
        return self.of(path, call_uuid, where=where)

    async def wait_hangup(
        self, call_uuid: str | None = None, request_uuid: str | None = None, timeout: float = 5.0
    ) -> Request:
        """The first hangup callback (Plivo's ``Event=Hangup``) of a call or request."""
        hits = await self.wait_for(
            lambda r: (
                r.params.get("Event") == "Hangup"
                and (call_uuid is None or r.params.get("CallUUID") == call_uuid)
                and (request_uuid is None or r.params.get("RequestUUID") == request_uuid)
            ),
            timeout,
        )
        return hits[0]

    # ----------------------------------------------------------------- the server side

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, str] = {}
        if request.method == "POST":
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        rec = Request(
            method=request.method,
            path=request.path,
            url=f"http://{request.host}{request.raw_path}",
            query=dict(request.query),
            form=form,
            headers=dict(request.headers),
            at=time.monotonic(),
        )
        rec.signed = self.auth_token is not None and _v3_valid(rec, self.auth_token)
        self.requests.append(rec)
        await self._notify()
        try:
            response = await self._reply(rec)
        except Exception:
            rec.status = 500
            raise
        rec.status = response.status
        await self._notify()
        return response

    async def _reply(self, rec: Request) -> web.StreamResponse:
        if self.fail.get(rec.path, 0) > 0:
            self.fail[rec.path] -= 1
            rec.failed = True
            return web.Response(status=503, text="down")
        delay = self.delays.get(rec.path)
        if delay:
            await asyncio.sleep(delay)  # the configured slowness is what the test is about
        reply: Any = self.routes.get(rec.path, self.respond)
        if callable(reply):
            reply = reply(rec)
            if inspect.isawaitable(reply):
                reply = await reply
        return _response(reply)


def _response(reply: Any) -> web.StreamResponse:
    if isinstance(reply, web.StreamResponse):
        return reply
    if isinstance(reply, bool):
        raise TypeError(f"not a reply: {reply!r}")
    if isinstance(reply, int):
        return web.Response(status=reply, text="<Response/>", content_type="text/xml")
    if isinstance(reply, str):
        return web.Response(text=reply, content_type="application/xml")
    if isinstance(reply, tuple):
        status, body, content_type = reply
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, content_type=content_type)
        return web.Response(status=status, text=body, content_type=content_type)
    raise TypeError(f"not a reply: {reply!r}")


def _v3_valid(rec: Request, auth_token: str) -> bool:
    """The check a Plivo customer's server makes (the SDK's own validator)."""
    sig = rec.headers.get("X-Plivo-Signature-V3")
    nonce = rec.headers.get("X-Plivo-Signature-V3-Nonce")
    if not sig or not nonce:
        return False
    if rec.method == "GET":
        base = rec.url.split("?", 1)[0]
        return bool(validate_v3_signature("GET", base, nonce, auth_token, sig, dict(rec.query)))
    return bool(validate_v3_signature("POST", rec.url, nonce, auth_token, sig, dict(rec.form)))
