"""The HTTP application: routing, HTTP Basic auth, error shapes, the OpenAPI document.

One aiohttp application serves every dialect; this module holds what they share and the
Plivo v1 routes (the dialect tables are in :mod:`softswitch.api.plivo`)::

    POST   /v1/Account/{auth_id}/Call/                 make a call (single or bulk)
    GET    /v1/Account/{auth_id}/Call/                 list records; ?status=live|queued: uuids
    GET    /v1/Account/{auth_id}/Call/{call_uuid}/     one record; ?status=live|queued: live view
    DELETE /v1/Account/{auth_id}/Call/{call_uuid}/     hang up (ringing calls too)
    DELETE /v1/Account/{auth_id}/Request/{request_uuid}/  cancel a queued or ringing call
    POST   /v1/Account/{auth_id}/Call/{call_uuid}/     transfer: run the XML at aleg_url
    POST   /v1/Account/{auth_id}/Call/{call_uuid}/Play/    play audio URLs (DELETE: stop)
    POST   /v1/Account/{auth_id}/Call/{call_uuid}/Speak/   text to speech (DELETE: stop)
    POST   /v1/Account/{auth_id}/Call/{call_uuid}/DTMF/    send digits
    POST   /v1/Account/{auth_id}/Call/{call_uuid}/Record/  record the call (DELETE: stop)
    GET    /v1/Account/{auth_id}/Recording/files/{name}    a recording file (no auth, see below)
    GET    /openapi.json                               what is served

Live call control answers 202 with Plivo's ``{"message", "api_id"}`` (Record adds ``url``
and ``recording_id``); the DELETEs answer 204. A call that is unknown or over is a 404, a
call not answered yet or a bad parameter a 400.

Recording files are served without authentication, like Plivo's recording URLs (public
object-store links): the name holds a random UUID (122 bits), so the URL is the capability.
This lets webhook receivers and ``<Play>`` fetch them as they are. Only names of the form
``<uuid>.wav``/``<uuid>.mp3`` under ``<data_dir>/recordings/`` are served, for an account that
exists; a recording still being written is a 404 until it is finished.

Errors are ``{"api_id": ..., "error": ...}`` with 400/401/404/405/429/500/503, as the
``plivo`` SDK expects (``plivo.rest.client.Client.process_response``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..call import AccountLimits, CallManager
from ..model import (
    CallError,
    CallNotAnswered,
    CallNotFound,
    InvalidSpec,
    MediaUnavailable,
    QueueFull,
    ShuttingDown,
)
from . import plivo
from .plivo import ApiError
from .plivo.dialect import call_snapshot

log = logging.getLogger("softswitch.api")

__all__ = ["create_app", "openapi_document", "MANAGER_KEY", "STORE_KEY"]

MANAGER_KEY: web.AppKey[CallManager] = web.AppKey("manager", CallManager)
STORE_KEY: web.AppKey[Any] = web.AppKey("store", object)
BULK_MAX_KEY: web.AppKey[int] = web.AppKey("bulk_max", int)
API_ID_KEY: web.RequestKey[str] = web.RequestKey("api_id", str)

_LIST_LIMIT_MAX = 20  # Plivo: 0 < limit <= 20


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, separators=(", ", ": ")))


def _error(status: int, message: str, api_id: str) -> web.Response:
    resp = _json(status, {"api_id": api_id, "error": message})
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="softswitch"'
    return resp


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: HTTP status of each domain error the core raises (Plivo's choices).
_DOMAIN_STATUS: tuple[tuple[type[CallError], int], ...] = (
    (InvalidSpec, 400),
    (CallNotAnswered, 400),
    (MediaUnavailable, 400),
    (CallNotFound, 404),
    (QueueFull, 429),
    (ShuttingDown, 503),
)


def _domain_status(exc: CallError) -> int:
    for kind, status in _DOMAIN_STATUS:
        if isinstance(exc, kind):
            return status
    return 500


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in the dialect's shape, with a fresh ``api_id`` per HTTP request."""
    api_id = str(uuid.uuid4())
    request[API_ID_KEY] = api_id
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.error, api_id)
    except CallError as exc:
        return _error(_domain_status(exc), exc.message, api_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {
            404: "resource not found",
            405: f"method {request.method} not allowed for this resource",
            413: "request body too large",
        }.get(exc.status, exc.reason or "error")
        return _error(exc.status, reason, api_id)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal server error", api_id)


def _authenticate(request: web.Request) -> AccountLimits:
    """HTTP Basic with the account's auth id/token; the path's auth id must be the caller's."""
    manager = request.app[MANAGER_KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(401, "authentication required: use HTTP Basic with your auth id and token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "malformed Authorization header") from None
    auth_id, sep, token = decoded.partition(":")
    account = manager.account(auth_id) if sep else None
    if account is None or not hmac.compare_digest(account.auth_token.encode(), token.encode()):
        raise ApiError(401, "authentication failed: wrong auth id or auth token")
    if request.match_info.get("auth_id") != auth_id:
        raise ApiError(401, "authentication failed: the account in the URL is not yours")
    return account


async def _body(request: web.Request) -> dict[str, Any]:
    """JSON or form body. A JSON object is accepted whatever the Content-Type says
    (``curl -d '{...}'`` sends it as a form), as Plivo does."""
    raw = await request.read()
    text = raw.decode("utf-8", "replace").strip()
    ctype = request.content_type
    if ctype == "application/json" or text.startswith("{"):
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        return data
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raise ApiError(400, f"unsupported Content-Type {ctype!r}: send JSON or a form")


# --- handlers -------------------------------------------------------------------------------


async def create_call(request: web.Request) -> web.Response:
    """POST /v1/Account/{auth_id}/Call/: 201 "call fired" or 200 "call queued"."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    if not manager.accepting:
        raise ApiError(503, "server is shutting down; not accepting calls")
    data = await _body(request)
    req = plivo.parse_call_request(data, bulk_max=request.app[BULK_MAX_KEY])
    result = await manager.admit(account, req.to_spec())
    request_uuid: Any = list(result.request_uuids) if req.is_bulk else result.request_uuids[0]
    if result.queued:
        return _json(200, {"message": "call queued", "request_uuid": request_uuid, "api_id": request[API_ID_KEY]})
    return _json(201, {"message": "call fired", "request_uuid": request_uuid, "api_id": request[API_ID_KEY]})


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise ApiError(400, f"{name} must be between {lo} and {hi}" if hi is not None else f"{name} must be >= {lo}")
    return value


async def list_calls(request: web.Request) -> web.Response:
    """GET /v1/Account/{auth_id}/Call/: records with Plivo's filters; status=live|queued: uuids."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    api_id = request[API_ID_KEY]
    status = request.query.get("status")
    limit = _query_int(request, "limit", _LIST_LIMIT_MAX, 1, _LIST_LIMIT_MAX)
    offset = _query_int(request, "offset", 0, 0, None)
    direction = request.query.get("call_direction")
    if direction is not None and direction not in ("inbound", "outbound"):
        raise ApiError(400, "call_direction must be inbound or outbound")
    if status in ("live", "queued"):
        calls = manager.live_calls(account.auth_id, status=status)
        frm, to = request.query.get("from_number"), request.query.get("to_number")
        if direction == "inbound":
            calls = []
        if frm:
            calls = [c for c in calls if c.from_.lstrip("+") == frm.lstrip("+")]
        if to:
            wanted = {t.strip().lstrip("+") for t in to.split("<")}
            calls = [c for c in calls if c.to.lstrip("+") in wanted]
        return _json(200, {"api_id": api_id, "calls": [c.call_uuid for c in calls[offset : offset + limit]]})

    filters: dict[str, str] = {}
    for key, value in request.query.items():
        if key in ("limit", "offset", "cursor", "callback_url", "callback_method", "call_uuid"):
            continue
        if key == "status":
            filters["call_status"] = value
        else:
            filters[key] = value
    store = request.app[STORE_KEY]
    try:
        rows, total = store.list_calls(account.auth_id, filters=filters, limit=limit, offset=offset)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    base = f"/v1/Account/{account.auth_id}/Call/"
    extra = "".join(f"&{k}={v}" for k, v in request.query.items() if k not in ("limit", "offset"))
    nxt = f"{base}?limit={limit}&offset={offset + limit}{extra}" if offset + limit < total else None
    prev = f"{base}?limit={limit}&offset={max(0, offset - limit)}{extra}" if offset > 0 else None
    objects = [plivo.cdr_json(r, auth_id=account.auth_id) for r in rows]
    return _json(
        200,
        {
            "api_id": api_id,
            "meta": {"limit": limit, "offset": offset, "next": nxt, "previous": prev, "total_count": total},
            "objects": objects,
        },
    )


async def get_call(request: web.Request) -> web.Response:
    """GET /v1/Account/{auth_id}/Call/{call_uuid}/: the record; ?status=live|queued: the live view."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    api_id = request[API_ID_KEY]
    uid = request.match_info["call_uuid"]
    status = request.query.get("status")
    if status in ("live", "queued"):
        call = manager.live_call(account.auth_id, uid) or manager.live_by_request(account.auth_id, uid)
        if call is None or not (call.is_queued if status == "queued" else call.is_live):
            raise ApiError(404, f"no {status} call with uuid {uid}")
        snap = call_snapshot(call)
        if status == "queued":
            return _json(200, plivo.queued_call_json(snap, api_id=api_id))
        return _json(200, plivo.live_call_json(snap, api_id=api_id))
    store = request.app[STORE_KEY]
    rec = store.get_call(account.auth_id, uid) or store.get_call_by_request(account.auth_id, uid)
    if rec is None:
        raise ApiError(404, f"call {uid} not found")
    return _json(200, plivo.cdr_json(rec, auth_id=account.auth_id, api_id=api_id))


async def hangup_call(request: web.Request) -> web.Response:
    """DELETE /v1/Account/{auth_id}/Call/{call_uuid}/: hang up a live call (CANCEL if ringing)."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    uid = request.match_info["call_uuid"]
    call = manager.live_call(account.auth_id, uid)
    if call is None:
        raise ApiError(404, f"no live call with uuid {uid}")
    await manager.hangup(call)
    return web.Response(status=204)


async def cancel_request(request: web.Request) -> web.Response:
    """DELETE /v1/Account/{auth_id}/Request/{request_uuid}/: cancel a queued or ringing call."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    uid = request.match_info["request_uuid"]
    call = manager.live_by_request(account.auth_id, uid)
    if call is None or call.answered_at is not None:
        raise ApiError(404, f"no queued or ringing call for request {uid}")
    await manager.hangup(call)
    return web.Response(status=204)


# --- live call control ----------------------------------------------------------------------


def _live(request: web.Request) -> tuple[CallManager, Any]:
    """The authenticated account's live call named in the path, or 404."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    uid = request.match_info["call_uuid"]
    call = manager.live_call(account.auth_id, uid)
    if call is None:
        raise ApiError(404, f"no live call with uuid {uid}")
    return manager, call


def _accepted(request: web.Request, kind: str, call: Any, callback: tuple[str | None, str] | None = None,
              **extra: str) -> web.Response:
    """202 with Plivo's message; a ``callback_url`` also gets the same fields posted."""
    body = {"message": plivo.LIVE_MESSAGES[kind], **extra, "api_id": request[API_ID_KEY]}
    if callback is not None and callback[0]:
        manager = request.app[MANAGER_KEY]
        params = {k: str(v) for k, v in body.items()}
        params["call_uuid"] = call.call_uuid
        manager.post_callback(call, f"api-{kind}", callback[0], callback[1], params)
    return _json(202, body)


async def transfer_call(request: web.Request) -> web.Response:
    """POST /v1/Account/{auth_id}/Call/{call_uuid}/: transfer the A leg to the XML at aleg_url."""
    manager, call = _live(request)
    req = plivo.parse_transfer_request(await _body(request))
    if req.legs != "aleg":
        raise ApiError(400, "legs=bleg|both: transferring the bridged B leg is not supported; use legs=aleg")
    assert req.aleg_url is not None
    await manager.transfer(call, req.aleg_url, req.aleg_method)
    return _accepted(request, "transfer", call)


async def play_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Play/: play audio URLs on the call."""
    manager, call = _live(request)
    req = plivo.parse_play_request(await _body(request))
    await manager.play(call, req)
    return _accepted(request, "play", call, (req.callback_url, req.callback_method))


async def stop_play_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Play/: stop what Play started."""
    manager, call = _live(request)
    manager.stop_playback(call, "play")
    return web.Response(status=204)


async def speak_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Speak/: text to speech on the call."""
    manager, call = _live(request)
    req = plivo.parse_speak_request(await _body(request))
    await manager.speak(call, req)
    return _accepted(request, "speak", call, (req.callback_url, req.callback_method))


async def stop_speak_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Speak/: stop what Speak started."""
    manager, call = _live(request)
    manager.stop_playback(call, "speak")
    return web.Response(status=204)


async def dtmf_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/DTMF/: send digits on the A (or B) leg."""
    manager, call = _live(request)
    req = plivo.parse_digits_request(await _body(request))
    manager.send_dtmf(call, req.digits, req.leg)
    return _accepted(request, "digits", call, (req.callback_url, req.callback_method))


async def record_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Record/: record the call; answers its URL and id."""
    manager, call = _live(request)
    req = plivo.parse_record_request(await _body(request))
    recording_id, url = manager.start_recording(call, req, request[API_ID_KEY])
    return _accepted(request, "record", call, None, url=url, recording_id=recording_id)


async def stop_record_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Record/: stop every recording, or the one at ``URL``."""
    manager, call = _live(request)
    data = await _body(request) if request.can_read_body else {}
    url = data.get("URL") or request.query.get("URL")
    if url is not None and not isinstance(url, str):
        raise ApiError(400, "URL must be a string")
    stopped = manager.stop_recording(call, url or None)
    if url and not stopped:
        raise ApiError(404, f"no recording in progress at {url}")
    return web.Response(status=204)


_RECORDING_NAME_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(wav|mp3)$")
_RECORDING_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}


async def recording_file(request: web.Request) -> web.StreamResponse:
    """GET /v1/Account/{auth_id}/Recording/files/{name}: a finished recording (see module doc)."""
    manager = request.app[MANAGER_KEY]
    name = request.match_info["name"]
    m = _RECORDING_NAME_RE.match(name)
    if manager.account(request.match_info["auth_id"]) is None or m is None:
        raise ApiError(404, "recording not found")
    if manager.recording_in_progress(name):
        raise ApiError(404, "recording is still in progress")
    path = manager.recording_path(name)
    if not path.is_file():
        raise ApiError(404, "recording not found")
    return web.FileResponse(path, headers={"Content-Type": _RECORDING_TYPES[m.group(1)]})


async def openapi(request: web.Request) -> web.Response:
    return _json(200, openapi_document())


# --- application ----------------------------------------------------------------------------


def create_app(manager: CallManager, store: Any, *, bulk_max: int = plivo.BULK_MAX_DEFAULT) -> web.Application:
    """The aiohttp application over a :class:`CallManager` and a ``CallStore``."""
    app = web.Application(middlewares=[_errors], client_max_size=4 * 1024 * 1024)
    app[MANAGER_KEY] = manager
    app[STORE_KEY] = store
    app[BULK_MAX_KEY] = bulk_max
    routes: list[tuple[str, str, Handler]] = [
        ("/v1/Account/{auth_id}/Call/", "POST", create_call),
        ("/v1/Account/{auth_id}/Call/", "GET", list_calls),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/", "GET", get_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/", "DELETE", hangup_call),
        ("/v1/Account/{auth_id}/Request/{request_uuid}/", "DELETE", cancel_request),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/", "POST", transfer_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Play/", "POST", play_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Play/", "DELETE", stop_play_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Speak/", "POST", speak_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Speak/", "DELETE", stop_speak_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/DTMF/", "POST", dtmf_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Record/", "POST", record_call),
        ("/v1/Account/{auth_id}/Call/{call_uuid}/Record/", "DELETE", stop_record_call),
        ("/v1/Account/{auth_id}/Recording/files/{name}", "GET", recording_file),
        ("/openapi.json", "GET", openapi),
    ]
    for path, method, handler in routes:
        app.router.add_route(method, path, handler)
        if path.endswith("/"):  # the SDK always adds the trailing slash; curl users may not
            app.router.add_route(method, path.rstrip("/"), handler)
    return app


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes above, with seeds/002's parameters and ranges."""
    url = {"type": "string", "format": "uri"}
    method = {"type": "string", "enum": ["GET", "POST"], "default": "POST"}
    make_call_props: dict[str, Any] = {
        "from": {"type": "string", "description": "Caller ID: country code and number (or a SIP user)."},
        "to": {
            "type": "string",
            "description": "Number or SIP URI; several joined with '<' for a bulk call "
            f"(at most {plivo.BULK_MAX_DEFAULT} unique destinations).",
        },
        "answer_url": {**url, "description": "Fetched on answer (Event=StartApp): three attempts, then fallback_url, within 60 s."},
        "answer_method": method,
        "ring_url": {**url, "description": "Notified on the first 18x (Event=Ring)."},
        "ring_method": method,
        "hangup_url": {**url, "description": "Notified once when the call ends (Event=Hangup)."},
        "hangup_method": method,
        "fallback_url": {**url, "description": "Fetched when answer_url fails."},
        "fallback_method": method,
        "caller_name": {"type": "string", "maxLength": plivo.CALLER_NAME_MAX},
        "send_digits": {"type": "string", "pattern": "^[0-9A-Da-d*#wW]+(@[0-9]+)?$",
                        "description": "DTMF after answer; w = 0.5 s, W = 1 s, @ms = tone length."},
        "send_on_preanswer": {"type": "boolean", "default": False},
        "time_limit": {"type": "integer", "minimum": 1, "default": plivo.TIME_LIMIT_DEFAULT,
                       "description": f"Seconds from answer; values >= {plivo.TIME_LIMIT_CAP} end the call after 24 h."},
        "hangup_on_ring": {"type": "integer", "minimum": 1, "description": "Seconds from the first ring."},
        "machine_detection": {"type": "string", "enum": ["true", "hangup"]},
        "machine_detection_time": {"type": "integer", "minimum": plivo.MACHINE_DETECTION_TIME_RANGE[0],
                                   "maximum": plivo.MACHINE_DETECTION_TIME_RANGE[1],
                                   "default": plivo.MACHINE_DETECTION_TIME_DEFAULT},
        "machine_detection_url": url,
        "machine_detection_method": method,
        "sip_headers": {"type": "string", "description": "key=value,... sent as X-PH-key SIP headers; letters and digits."},
        "ring_timeout": {"type": "integer", "minimum": 1, "maximum": plivo.RING_TIMEOUT_MAX,
                         "default": plivo.RING_TIMEOUT_DEFAULT},
        "parent_call_uuid": {"type": "string", "format": "uuid"},
        "error_if_parent_not_found": {"type": "boolean", "default": False},
    }
    error = {"$ref": "#/components/schemas/Error"}
    err_responses = {
        str(code): {"description": text, "content": {"application/json": {"schema": error}}}
        for code, text in (
            (400, "A parameter is missing or invalid (the error names it)"),
            (401, "Wrong auth id or token"),
            (404, "No such call or request"),
            (405, "Method not allowed"),
            (429, "Too many queued calls"),
            (500, "Internal error"),
            (503, "Shutting down"),
        )
    }
    auth_path = {"name": "auth_id", "in": "path", "required": True, "schema": {"type": "string"}}
    call_path = {"name": "call_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    list_params = [
        _param("status", {"type": "string"}, "live or queued: list uuids of live/queued calls; else a call_status filter"),
        _param("limit", {"type": "integer", "minimum": 1, "maximum": 20, "default": 20}, "page size"),
        _param("offset", {"type": "integer", "minimum": 0, "default": 0}, "page start"),
        _param("call_direction", {"type": "string", "enum": ["inbound", "outbound"]}, "direction"),
        _param("from_number", {"type": "string"}, "caller"),
        _param("to_number", {"type": "string"}, "destination"),
        _param("parent_call_uuid", {"type": "string"}, "parent call"),
        _param("hangup_cause_code", {"type": "integer"}, "hangup code"),
        _param("hangup_source", {"type": "string"}, "hangup source"),
    ]
    for fld in ("bill_duration", "end_time"):
        for suffix in ("", "__gt", "__gte", "__lt", "__lte"):
            list_params.append(_param(fld + suffix, {"type": "string"}, f"{fld} filter"))
    legs = {"type": "string", "enum": list(plivo.LEGS), "default": "aleg"}
    callback = {"callback_url": {**url, "description": "Also receives the response fields."},
                "callback_method": method}
    live_schemas: dict[str, Any] = {
        "Transfer": {"type": "object", "properties": {
            "legs": {**legs, "description": "Only aleg is supported: the A leg runs the XML at aleg_url."},
            "aleg_url": {**url, "description": "XML to run on the A leg instead of its current XML."},
            "aleg_method": method, "bleg_url": url, "bleg_method": method}},
        "Play": {"type": "object", "required": ["urls"], "properties": {
            "urls": {"type": "string", "description": f"Comma-separated WAV/MP3 URLs (at most {plivo.PLAY_URLS_MAX})."},
            "length": {"type": "integer", "minimum": 1, "description": "Seconds of audio at most."},
            "legs": legs, "loop": {"type": "boolean", "default": False, "description": "Repeat until stopped."},
            "mix": {"type": "boolean", "default": True, "description":
                    "false: stop what the leg hears now and play at once; true: play when the "
                    "current prompt ends (no true mixing in this media engine)."},
            **callback}},
        "Speak": {"type": "object", "required": ["text"], "properties": {
            "text": {"type": "string", "maxLength": plivo.SPEAK_TEXT_MAX},
            "voice": {"type": "string", "default": "WOMAN", "description": "WOMAN, MAN or Polly.<name> (espeak-ng)."},
            "language": {"type": "string", "default": "en-US"},
            "legs": legs, "loop": {"type": "boolean", "default": False},
            "mix": {"type": "boolean", "default": True}, **callback}},
        "DTMF": {"type": "object", "required": ["digits"], "properties": {
            "digits": {"type": "string", "pattern": "^[0-9A-Da-d*#wW]+(@[0-9]+)?$"},
            "leg": {"type": "string", "enum": ["aleg", "bleg"], "default": "aleg"}, **callback}},
        "Record": {"type": "object", "properties": {
            "time_limit": {"type": "integer", "minimum": 1, "maximum": plivo.TIME_LIMIT_CAP,
                           "default": plivo.RECORD_TIME_LIMIT_DEFAULT},
            "file_format": {"type": "string", "enum": list(plivo.RECORD_FORMATS), "default": "mp3"},
            "record_channel_type": {"type": "string", "enum": ["mono"], "default": "mono"},
            "transcription_type": {"type": "string", "description": "Accepted, ignored (no transcription)."},
            "transcription_url": url, "transcription_method": method,
            "callback_url": {**url, "description": "Posted when the recording ends: api_id, record_url, "
                             "call_uuid, recording_id, recording_duration(_ms), recording_start_ms, recording_end_ms."},
            "callback_method": method}},
        "Accepted": {"type": "object", "required": ["message", "api_id"], "properties": {
            "message": {"type": "string", "enum": sorted(plivo.LIVE_MESSAGES.values())},
            "api_id": {"type": "string"},
            "url": {"type": "string", "format": "uri", "description": "Record only: where the file is served."},
            "recording_id": {"type": "string", "description": "Record only."}}},
    }

    def live_op(summary: str, schema: str | None, ok: str = "202") -> dict[str, Any]:
        op: dict[str, Any] = {"summary": summary, "parameters": [auth_path, call_path]}
        if schema is not None:
            body = {"$ref": f"#/components/schemas/{schema}"}
            op["requestBody"] = {"required": schema in ("Play", "Speak", "DTMF"), "content": {
                "application/json": {"schema": body}, "application/x-www-form-urlencoded": {"schema": body}}}
        if ok == "202":
            op["responses"] = {"202": {"description": "accepted", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Accepted"}}}}, **err_responses}
        else:
            op["responses"] = {"204": {"description": "stopped"}, **err_responses}
        return op
    return {
        "openapi": "3.1.0",
        "info": {"title": "softswitch: Plivo-compatible Voice API", "version": "1"},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {"type": "object", "required": ["api_id", "error"],
                          "properties": {"api_id": {"type": "string"}, "error": {"type": "string"}}},
                "MakeCall": {"type": "object", "required": ["from", "to", "answer_url"], "properties": make_call_props},
                "CallFired": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string", "enum": ["call fired", "call queued"]},
                        "request_uuid": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                        "api_id": {"type": "string"},
                    },
                },
                **live_schemas,
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/v1/Account/{auth_id}/Call/": {
                "post": {
                    "summary": "Make a call (single or bulk)",
                    "parameters": [auth_path],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/MakeCall"}},
                            "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/MakeCall"}},
                        },
                    },
                    "responses": {
                        "201": {"description": "call fired",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallFired"}}}},
                        "200": {"description": "call queued behind the calls-per-second limit",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallFired"}}}},
                        **err_responses,
                    },
                },
                "get": {
                    "summary": "List call records (or live/queued call uuids)",
                    "parameters": [auth_path, *list_params],
                    "responses": {"200": {"description": "{api_id, meta, objects} or {api_id, calls}"}, **err_responses},
                },
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/": {
                "get": {
                    "summary": "Retrieve a call record (status=live|queued: the live call)",
                    "parameters": [auth_path, call_path, _param("status", {"type": "string", "enum": ["live", "queued"]}, "live view")],
                    "responses": {"200": {"description": "the call"}, **err_responses},
                },
                "delete": {
                    "summary": "Hang up a call (ringing calls are cancelled)",
                    "parameters": [auth_path, call_path],
                    "responses": {"204": {"description": "hung up"}, **err_responses},
                },
                "post": live_op("Transfer an answered call: run the XML at aleg_url", "Transfer"),
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/Play/": {
                "post": live_op("Play audio on an answered call", "Play"),
                "delete": live_op("Stop the audio Play started", None, "204"),
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/Speak/": {
                "post": live_op("Speak text on an answered call", "Speak"),
                "delete": live_op("Stop the speech Speak started", None, "204"),
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/DTMF/": {
                "post": live_op("Send DTMF digits on an answered call", "DTMF"),
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/Record/": {
                "post": live_op("Record an answered call (both directions, mono)", "Record"),
                "delete": {**live_op("Stop recording (all, or the one at URL)", None, "204"),
                           "requestBody": {"required": False, "content": {"application/json": {"schema": {
                               "type": "object", "properties": {"URL": {"type": "string", "format": "uri"}}}}}}},
            },
            "/v1/Account/{auth_id}/Recording/files/{name}": {
                "get": {
                    "summary": "A finished recording (no authentication: the random name is the capability)",
                    "security": [],
                    "parameters": [auth_path, {"name": "name", "in": "path", "required": True,
                                               "schema": {"type": "string", "pattern": "^[0-9a-f-]{36}\\.(wav|mp3)$"}}],
                    "responses": {
                        "200": {"description": "the audio", "content": {"audio/wav": {}, "audio/mpeg": {}}},
                        "404": {"description": "no such recording, or still in progress",
                                "content": {"application/json": {"schema": error}}},
                    },
                },
            },
            "/v1/Account/{auth_id}/Request/{request_uuid}/": {
                "delete": {
                    "summary": "Cancel a queued or ringing call by its request uuid",
                    "parameters": [auth_path, {"name": "request_uuid", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "cancelled"}, **err_responses},
                },
            },
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }
