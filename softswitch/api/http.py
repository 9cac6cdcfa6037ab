"""Shared HTTP plumbing of every dialect: one aiohttp application, the error middleware,
HTTP Basic authentication, request bodies, recording files and the OpenAPI assembly.

Each dialect package contributes an :class:`HttpDialect`: its routes, the URL prefix it
owns, how it shapes an error and which HTTP status each domain error of the core
(:mod:`softswitch.model`) becomes there, and its part of the OpenAPI document. The
middleware answers every error of a request in the shape of the dialect that owns its path.

Recording files live in a directory per account (``<data_dir>/recordings/<auth_id>/``) and
are served to their account only: the bare URL needs that account's Basic credentials (401
without, 404 for another account). The URLs the server hands out (API answers, ``RecordUrl`` /
``RecordingUrl`` in callbacks) are signed when ``[http] recording_url_ttl_s`` > 0 (the
default, one day): ``?expires=<unix time>&sig=<HMAC-SHA256 with the account's auth token over
the path and the expiry>``, so webhook receivers, ``<Play>`` and third parties fetch them
without credentials until they expire (403 after, or for a signature that does not match);
Twilio serves recordings with authentication optional, Plivo as public links, and callbacks
carry no credentials of ours. Only names of the form ``<uuid>.wav``/``<uuid>.mp3`` are
served; a recording still being written is a 404 until it is finished.

Bodies (:func:`read_body`, :func:`read_form`) are read within ``[http] body_timeout_s`` (408
and the connection closed after it); anything malformed in them is a 400 at this edge, and
so is a URL whose literal address the fetch policy refuses (:mod:`softswitch.netpolicy`).
Failed Basic authentication is throttled per source address (:class:`AuthThrottle`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from ..call import AccountLimits, CallManager
from ..model import CallError
from ..netpolicy import FetchPolicy, default_policy
from .values import int64

log = logging.getLogger("softswitch.api")

__all__ = [
    "API_ID_KEY",
    "AuthThrottle",
    "BULK_MAX_KEY",
    "DIGITS_TONE_MS_KEY",
    "HttpDialect",
    "HttpError",
    "MANAGER_KEY",
    "OPS_KEY",
    "STORE_KEY",
    "authenticate_basic",
    "create_app",
    "json_response",
    "openapi_document",
    "read_body",
    "read_form",
    "recording_file",
    "recording_url_signer",
    "self_fetchable",
    "sign_recording_url",
]

MANAGER_KEY: web.AppKey[CallManager] = web.AppKey("manager", CallManager)
STORE_KEY: web.AppKey[Any] = web.AppKey("store", object)
#: The operators' view (``softswitch.ops.Operations``: traces, metrics), when the server runs one.
OPS_KEY: web.AppKey[Any] = web.AppKey("ops", object)
BULK_MAX_KEY: web.AppKey[int] = web.AppKey("bulk_max", int)
#: The server's default DTMF tone length for digits without ``@ms`` (None: the engine's).
DIGITS_TONE_MS_KEY: web.AppKey[int | None] = web.AppKey("digits_tone_ms", object)  # type: ignore[arg-type]
#: Failed Basic-auth attempts per source address (:class:`AuthThrottle`).
AUTH_THROTTLE_KEY: web.AppKey[AuthThrottle] = web.AppKey("auth_throttle", object)  # type: ignore[arg-type]
#: Where the server may connect for the URLs requests give it (:mod:`softswitch.netpolicy`).
FETCH_POLICY_KEY: web.AppKey[FetchPolicy] = web.AppKey("fetch_policy", FetchPolicy)
#: ``[http] body_timeout_s``: how long a request body may take to arrive.
BODY_TIMEOUT_KEY: web.AppKey[float] = web.AppKey("body_timeout", float)
#: A fresh id per HTTP request (Plivo's ``api_id``), for error bodies and logs.
API_ID_KEY: web.RequestKey[str] = web.RequestKey("api_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """An error that becomes the owning dialect's error body with ``status``.

    Carries what to answer, like h11's ``RemoteProtocolError(error_status_hint=...)``.
    """

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        #: Extra response headers (``Retry-After`` of a 429...).
        self.headers = headers or {}


class AuthThrottle:
    """Failed Basic-auth attempts per source address, in fixed windows.

    After ``limit`` failures within ``window_s`` seconds an address is refused (429 with
    ``Retry-After``) until its window ends, *even with good credentials*: otherwise the
    guess that hits would still be answered, which is what the throttle is there to stop.
    Requests from an address that is not blocked cost one dict lookup: correct requests are
    never slowed. The table is bounded (``max_sources``; the oldest windows go first).
    """

    def __init__(
        self,
        limit: int = 20,
        window_s: float = 60.0,
        *,
        max_sources: int = 10000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._clock = clock or time.monotonic
        #: source → [window start, failures]; insertion order = window start order.
        self._sources: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, source: str) -> float | None:
        """Seconds until ``source`` may try again, or None when it is not blocked."""
        entry = self._sources.get(source)
        if entry is None or self.limit <= 0:
            return None
        left = entry[0] + self.window_s - self._clock()
        if left <= 0:
            del self._sources[source]
            return None
        return left if entry[1] >= self.limit else None

    def failed(self, source: str) -> None:
        now = self._clock()
        entry = self._sources.get(source)
        if entry is None or entry[0] + self.window_s <= now:
            self._sources.pop(source, None)
            while len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
            self._sources[source] = [now, 1.0]
        else:
            entry[1] += 1


def json_response(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(
        body, status=status, dumps=lambda o: json.dumps(o, separators=(", ", ": "))
    )


def _default_error(status: int, message: str, request_id: str) -> web.Response:
    resp = json_response(status, {"api_id": request_id, "error": message})
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="softswitch"'
    return resp


@dataclass(frozen=True)
class HttpDialect:
    """The HTTP side of one dialect."""

    name: str
    #: Paths starting with this (or with any of these) are the dialect's (its error shape
    #: applies to them).
    prefix: str | tuple[str, ...]
    #: ``(path, method, handler)``; a path ending in "/" is also routed without it.
    routes: Sequence[tuple[str, str, Handler]]
    #: ``(status, message, request_id) -> response``.
    error_response: Callable[[int, str, str], web.Response] = _default_error
    #: HTTP status of each domain error (checked in order, ``isinstance``); others are 500.
    domain_status: Sequence[tuple[type[CallError], int]] = ()
    #: ``() -> {"info", "components", "paths"}`` (its part of ``/openapi.json``).
    openapi: Callable[[], dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def status_of(self, exc: CallError) -> int:
        for kind, status in self.domain_status:
            if isinstance(exc, kind):
                return status
        return 500


DIALECTS_KEY: web.AppKey[tuple[HttpDialect, ...]] = web.AppKey("dialects", tuple)
#: ``request -> response | None``: with several workers, a request about a live call another
#: worker holds is answered by that worker (``softswitch.server`` builds it over
#: ``softswitch.cluster``); None: this worker handles it.
Forwarder = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
FORWARD_KEY: web.AppKey[Forwarder] = web.AppKey("forward", object)  # type: ignore[arg-type]


def _owner(request: web.Request) -> HttpDialect:
    dialects = request.app[DIALECTS_KEY]
    for d in dialects:
        if request.path.startswith(d.prefix):
            return d
    return dialects[0]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in the owning dialect's shape, with a fresh request id per HTTP request."""
    request_id = str(uuid.uuid4())
    request[API_ID_KEY] = request_id
    try:
        return await handler(request)
    except _BodyTimeout:
        log.info(
            "%s %s: request body not received within %.1f s; answered 408",
            request.method,
            request.path,
            request.app[BODY_TIMEOUT_KEY],
        )
        return await _close_after(
            request,
            _owner(request).error_response(408, "request body not received in time", request_id),
        )
    except (ConnectionError, ClientPayloadError) as exc:
        # The client went away mid-request: nothing to answer, nothing wrong here.
        # (Re-raising would have aiohttp log it as an error with a traceback; the response
        # returned here is never written: aiohttp sees the transport gone.)
        log.debug("%s %s: client disconnected: %s", request.method, request.path, exc)
        resp = web.Response(status=400)
        resp.force_close()
        return resp
    except HttpError as exc:
        resp = _owner(request).error_response(exc.status, exc.error, request_id)
        resp.headers.update(exc.headers)
        return resp
    except CallError as exc:
        dialect = _owner(request)
        return dialect.error_response(dialect.status_of(exc), exc.message, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {
            404: "resource not found",
            405: f"method {request.method} not allowed for this resource",
            413: "request body too large",
        }.get(exc.status, exc.reason or "error")
        resp = _owner(request).error_response(exc.status, reason, request_id)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            # RFC 9110 §15.5.6: a 405 carries Allow, the methods the resource supports.
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return resp
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _owner(request).error_response(500, "internal server error", request_id)


@web.middleware
async def _forward(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the request where its call lives (:data:`FORWARD_KEY`), else here."""
    forward = request.app.get(FORWARD_KEY)
    if forward is not None:
        response = await forward(request)
        if response is not None:
            return response
    return await handler(request)


async def _close_after(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Send ``resp`` and close the connection at once (the rest of the body is not waited
    for: aiohttp would otherwise linger reading it)."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    if request.transport is not None:
        request.transport.close()
    return resp


def authenticate_basic(request: web.Request) -> AccountLimits:
    """HTTP Basic with an account's auth id and token (raises :class:`HttpError` 401, or
    429 while the source address is throttled: :class:`AuthThrottle`)."""
    manager = request.app[MANAGER_KEY]
    throttle = request.app[AUTH_THROTTLE_KEY]
    source = request.remote or "?"
    wait = throttle.retry_after(source)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise HttpError(
            429,
            f"too many failed authentication attempts from {source}; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        # No credentials at all is not a guess: not counted.
        raise HttpError(401, "authentication required: use HTTP Basic with your auth id and token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        throttle.failed(source)
        raise HttpError(401, "malformed Authorization header") from None
    auth_id, sep, token = decoded.partition(":")
    account = manager.account(auth_id) if sep else None
    if account is None or not hmac.compare_digest(account.auth_token.encode(), token.encode()):
        throttle.failed(source)
        raise HttpError(401, "authentication failed: wrong auth id or auth token")
    return account


#: JSON bodies nest at most this deep: no request of any dialect needs more than a few
#: levels, and the parser must never reach the interpreter's recursion limit.
JSON_MAX_DEPTH = 32
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "")


class _BodyTimeout(Exception):
    pass


async def _within_body_timeout(request: web.Request, read: Awaitable[Any]) -> Any:
    """Await a read of the request body, at most ``[http] body_timeout_s``: a client that
    sends half a body and waits is answered 408 (and its connection closed, by the
    middleware)."""
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT_KEY]):
            return await read
    except TimeoutError:
        raise _BodyTimeout() from None


def _json_int(text: str) -> int:
    """``json`` hook: integers past 64 bits are refused here, before they reach the store."""
    try:
        return int64(text)
    except ValueError:
        raise ValueError(f"integer {text[:24]}... out of range") from None


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:24]} out of range")
    return value


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than :data:`JSON_MAX_DEPTH` before parsing it (brackets
    inside strings are skipped), so no RecursionError can start in the parser or in the
    code that walks the value."""
    if text.count("[") + text.count("{") <= JSON_MAX_DEPTH:
        return
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > JSON_MAX_DEPTH:
                raise HttpError(400, f"request body nests deeper than {JSON_MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


async def read_form(request: web.Request) -> MultiDictProxy[Any] | None:
    """The form fields of a urlencoded or multipart body (None for another Content-Type,
    whose body is read and dropped), within the body timeout. A malformed form (bad
    multipart framing, bytes not in its charset) raises :class:`HttpError` 400."""
    if request.content_type not in _FORM_TYPES[:2]:
        await _within_body_timeout(request, request.read())
        return None
    try:
        form = await _within_body_timeout(request, request.post())
    except (
        ValueError,
        LookupError,
        HttpProcessingError,
    ) as exc:  # UnicodeDecodeError: a ValueError
        why = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
        raise HttpError(
            400, f"malformed form body: {why.strip()[:120] or type(exc).__name__}"
        ) from None
    _check_urls(request, form.items())
    return form


async def read_body(request: web.Request, *, repeated: bool = False) -> dict[str, Any]:
    """JSON or form body. A JSON object is accepted whatever the Content-Type says
    (``curl -d '{...}'`` sends it as a form), as Plivo does. With ``repeated``, a form key
    given more than once maps to the list of its values (else the last one wins).

    Every way a body can be bad is a 400 here, at the edge: undecodable or malformed JSON,
    JSON nested too deep, integers past 64 bits, a malformed form; a body that does not
    arrive in time is a 408."""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        form = await read_form(request)
        return _form_fields(form, repeated) if form is not None else {}
    raw = await _within_body_timeout(request, request.read())
    text = raw.decode("utf-8", "replace").strip()
    if ctype == "application/json" or text.startswith("{"):
        if not text:
            return {}
        _check_depth(text)
        try:
            data = json.loads(
                text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
            )
        except RecursionError:  # pragma: no cover - _check_depth stops it first
            raise HttpError(
                400, f"request body nests deeper than {JSON_MAX_DEPTH} levels"
            ) from None
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {str(exc)[:120]}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "request body must be a JSON object")
        _check_urls(request, data.items())
        return data
    if ctype in _FORM_TYPES:
        form = await read_form(request)
        return _form_fields(form, repeated) if form is not None else {}
    raise HttpError(400, f"unsupported Content-Type {ctype[:60]!r}: send JSON or a form")


_URL_RE = re.compile(r"https?://[^\s,<>\"']+", re.IGNORECASE)


def _check_urls(request: web.Request, items: Any) -> None:
    """Refuse, naming the parameter, any URL in a request value whose host is an IP literal
    the server's network policy denies (a callback to 169.254.169.254 or to this very API):
    a host name is checked when it is resolved, at fetch time (:mod:`softswitch.netpolicy`)."""
    policy = request.app[FETCH_POLICY_KEY]
    for key, value in items:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str) or "://" not in v:
                continue
            for url in _URL_RE.findall(v):
                why = policy.url_refusal(url)
                if why is not None:
                    raise HttpError(
                        400, f"{key}: {url[:200]} is refused by the server's network policy ({why})"
                    )


def _form_fields(form: MultiDictProxy[Any], repeated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    if repeated:
        for key in out:
            values = [v for v in form.getall(key) if isinstance(v, str)]
            if len(values) > 1:
                out[key] = values
    return out


#: A recording's name: a uuid, or a name the request chose (``values.RECORDING_STEM_RE``),
#: then the format.
_RECORDING_NAME_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.(wav|mp3)$")
_RECORDING_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}


def self_fetchable(handler: Handler) -> Handler:
    """Mark a route the server may fetch from itself (a document or file served without
    credentials): :mod:`softswitch.netpolicy` lets such paths through its own-API rule."""
    handler.self_fetchable = True  # type: ignore[attr-defined]
    return handler


def _recording_sig(token: str, path: str, expires: int) -> str:
    """HMAC-SHA256 with the account's auth token over the URL path and the expiry."""
    return hmac.new(token.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign_recording_url(url: str, token: str, expires: int) -> str:
    """``url`` with ``?expires=<unix time>&sig=<hmac>``: fetchable without credentials until
    ``expires`` (:func:`recording_file` checks it)."""
    path = urlsplit(url).path
    return f"{url}?expires={expires}&sig={_recording_sig(token, path, expires)}"


def recording_url_signer(manager: CallManager, ttl_s: int) -> Callable[[str, str], str]:
    """``CallManager.recording_url_signer``: URLs handed out expire ``ttl_s`` from now."""

    def sign(url: str, account_id: str) -> str:
        account = manager.account(account_id)
        if account is None:
            return url
        return sign_recording_url(url, account.auth_token, int(time.time()) + ttl_s)

    return sign


@self_fetchable
async def recording_file(request: web.Request) -> web.StreamResponse:
    """A finished recording ``{name}`` of account ``{auth_id}`` (see the module doc).

    With ``expires`` and ``sig`` in the query (the URL handed out in API answers and
    callbacks), the signature is the credential: 403 once expired or when it does not
    match. Without them the owning account's Basic credentials are required: 401 without
    credentials, 404 for another account (whose directory never holds the file)."""
    manager = request.app[MANAGER_KEY]
    name, auth_id = request.match_info["name"], request.match_info["auth_id"]
    m = _RECORDING_NAME_RE.match(name)
    expires, sig = request.query.get("expires"), request.query.get("sig")
    if expires is not None or sig is not None:
        account = manager.account(auth_id)
        if account is None or m is None:
            raise HttpError(404, "recording not found")
        try:
            deadline = int64(expires or "")
        except ValueError:
            raise HttpError(403, "expires must be a unix time") from None
        want = _recording_sig(account.auth_token, request.path, deadline)
        if not hmac.compare_digest(want.encode(), (sig or "").encode()):
            raise HttpError(403, "recording URL signature does not match")
        if deadline < time.time():
            raise HttpError(403, "recording URL has expired")
    else:
        account = authenticate_basic(request)
        if account.auth_id != auth_id or m is None:
            raise HttpError(404, "recording not found")
    if manager.live_ops.recording_in_progress(name):
        raise HttpError(404, "recording is still in progress")
    path = manager.recording_path(name, account.auth_id)
    if not path.is_file():
        raise HttpError(404, "recording not found")
    return web.FileResponse(path, headers={"Content-Type": _RECORDING_TYPES[m.group(1)]})


def _default_dialects() -> tuple[HttpDialect, ...]:
    from .plivo.routes import http_dialect

    return (http_dialect(),)


def openapi_document(dialects: Sequence[HttpDialect] | None = None) -> dict[str, Any]:
    """OpenAPI 3.1: every dialect's paths and components, and ``/openapi.json`` itself."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "softswitch", "version": "1"},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {},
        },
        "security": [{"basic": []}],
        "paths": {},
    }
    mounted = tuple(dialects or _default_dialects())
    for d in mounted:
        if d.openapi is None:
            continue
        part = d.openapi()
        if "info" in part and len(mounted) == 1:
            doc["info"] = part["info"]
        doc["components"]["schemas"].update(part.get("components", {}).get("schemas", {}))
        doc["paths"].update(part.get("paths", {}))
    doc["paths"]["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1"}},
        }
    }
    return doc


def create_app(
    manager: CallManager,
    store: Any,
    *,
    bulk_max: int = 1000,
    digits_tone_ms: int | None = None,
    dialects: Sequence[HttpDialect] | None = None,
    body_timeout_s: float = 30.0,
    auth_throttle: AuthThrottle | None = None,
    fetch_policy: FetchPolicy | None = None,
    forward: Forwarder | None = None,
) -> web.Application:
    """The aiohttp application over a :class:`CallManager` and a ``CallStore``, serving
    ``dialects`` (default: Plivo v1)."""
    mounted = tuple(dialects or _default_dialects())
    app = web.Application(middlewares=[_errors, _forward], client_max_size=4 * 1024 * 1024)
    if forward is not None:
        app[FORWARD_KEY] = forward
    app[MANAGER_KEY] = manager
    app[STORE_KEY] = store
    app[BULK_MAX_KEY] = bulk_max
    app[DIGITS_TONE_MS_KEY] = digits_tone_ms
    app[BODY_TIMEOUT_KEY] = body_timeout_s
    app[AUTH_THROTTLE_KEY] = auth_throttle or AuthThrottle()
    app[FETCH_POLICY_KEY] = fetch_policy or default_policy()
    app[DIALECTS_KEY] = mounted
    document = openapi_document(mounted)

    async def openapi(request: web.Request) -> web.Response:
        return json_response(200, document)

    policy = app[FETCH_POLICY_KEY]
    own = [path for d in mounted for path, _, h in d.routes if getattr(h, "self_fetchable", False)]
    policy.own_paths = tuple(
        re.compile(re.sub(r"\\\{[A-Za-z_]+\\\}", "[^/]+", re.escape(p))) for p in own
    )
    routes: list[tuple[str, str, Handler]] = [r for d in mounted for r in d.routes]
    routes.append(("/openapi.json", "GET", openapi))
    for path, method, handler in routes:
        # RFC 9110 §9.3.2: HEAD wherever GET (aiohttp sends the head of the GET answer).
        for m in (method, "HEAD") if method == "GET" else (method,):
            app.router.add_route(m, path, handler)
            if path.endswith("/"):  # the SDK always adds the trailing slash; curl users may not
                app.router.add_route(m, path.rstrip("/"), handler)
    return app
