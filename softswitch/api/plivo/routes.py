"""Plivo v1 routes: the handlers of ``/v1/Account/{auth_id}/...``::

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
    GET    /v1/Account/{auth_id}/Call/{call_uuid}/Trace/   the SIP messages (live or ended)
    GET    /v1/Account/{auth_id}/Recording/files/{name}    a recording file (Basic auth or a signed URL)
    ...    /v1/Account/{auth_id}/Conference/...            the Conference API (:mod:`.conference`)

Live call control answers 202 with Plivo's ``{"message", "api_id"}`` (Record adds ``url``
and ``recording_id``); the DELETEs answer 204. A call that is unknown or over is a 404, a
call not answered yet or a bad parameter a 400.

Errors are ``{"api_id": ..., "error": ...}`` with 400/404/405/429/500/503, as the
``plivo`` SDK expects (``plivo.rest.client.Client.process_response``); a 401 is Plivo's plain
text (:data:`UNAUTHORIZED_TEXT`); the core's domain errors map onto them by
:data:`DOMAIN_STATUS`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...call import AccountLimits, CallManager
from ...calltable import Call, RemoteCall
from ...model import (
    CallError,
    CallNotAnswered,
    CallNotFound,
    InvalidSpec,
    MediaUnavailable,
    QueueFull,
    ShuttingDown,
)
from ...store import Filter
from ..http import (
    API_ID_KEY,
    BULK_MAX_KEY,
    DIGITS_TONE_MS_KEY,
    MANAGER_KEY,
    OPS_KEY,
    STORE_KEY,
    Handler,
    HttpDialect,
    authenticate_basic,
    json_response,
    read_body,
    recording_file,
)
from ..values import INT64_MAX, int64
from . import (
    LIVE_MESSAGES,
    ApiError,
    cdr_json,
    live_call_json,
    parse_call_request,
    parse_digits_request,
    parse_play_request,
    parse_record_request,
    parse_speak_request,
    parse_transfer_request,
    queued_call_json,
)
from .conference import CONFERENCE_ROUTES
from .dialect import PlivoDialect, call_snapshot
from .filters import list_filters
from .openapi import openapi_document

__all__ = ["DOMAIN_STATUS", "ROUTES", "http_dialect"]

_LIST_LIMIT_MAX = 20  # Plivo: 0 < limit <= 20

#: HTTP status of each domain error the core raises.
DOMAIN_STATUS: tuple[tuple[type[CallError], int], ...] = (
    (InvalidSpec, 400),
    (CallNotAnswered, 400),
    (MediaUnavailable, 400),
    (CallNotFound, 404),
    (QueueFull, 429),
    (ShuttingDown, 503),
)


#: The body of Plivo's 401, plain text: the ``plivo`` SDK then raises its
#: ``AuthenticationError`` ("Failed to authenticate while accessing resource at: <url>") for
#: every resource. A JSON body would be parsed into the resource's response type first, and
#: a list's (``calls.list()``) fails on a body without ``objects`` with an AttributeError.
UNAUTHORIZED_TEXT = "Could not verify your access level for that URL.\nYou have to login with proper credentials"


def error_response(status: int, message: str, api_id: str) -> web.Response:
    """Plivo's error body: ``{"api_id", "error"}``; a 401 is Plivo's plain text."""
    if status == 401:
        return web.Response(status=401, text=UNAUTHORIZED_TEXT, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Basic realm="softswitch"'})
    return json_response(status, {"api_id": api_id, "error": message})


def _authenticate(request: web.Request) -> AccountLimits:
    """HTTP Basic with the account's auth id/token; the path's auth id must be the caller's."""
    account = authenticate_basic(request)
    if request.match_info.get("auth_id") != account.auth_id:
        raise ApiError(401, "authentication failed: the account in the URL is not yours")
    return account


async def create_call(request: web.Request) -> web.Response:
    """POST /v1/Account/{auth_id}/Call/: 201 "call fired" or 200 "call queued"."""
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    if not manager.accepting:
        raise ApiError(503, "server is shutting down; not accepting calls")
    data = await read_body(request)
    req = parse_call_request(
        data, bulk_max=request.app[BULK_MAX_KEY], digits_tone_ms=request.app[DIGITS_TONE_MS_KEY]
    )
    result = await manager.admit(account, req.to_spec())
    request_uuid: Any = list(result.request_uuids) if req.is_bulk else result.request_uuids[0]
    if result.queued:
        return json_response(200, {"message": "call queued", "request_uuid": request_uuid, "api_id": request[API_ID_KEY]})
    return json_response(201, {"message": "call fired", "request_uuid": request_uuid, "api_id": request[API_ID_KEY]})


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int64(raw, lo=lo, hi=INT64_MAX if hi is None else hi)
    except ValueError as exc:
        raise ApiError(400, f"{name} {exc}") from None


def _ours(call: Call | RemoteCall) -> bool:
    """Calls placed through this API: the others (legacy, CallAPI) have their own shapes."""
    return call.dialect.name == PlivoDialect.name


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
        calls = [c for c in await manager.cluster_live_calls(account.auth_id, status=status) if _ours(c)]
        frm, to = request.query.get("from_number"), request.query.get("to_number")
        if direction is not None:
            calls = [c for c in calls if c.direction == direction]
        if frm:
            calls = [c for c in calls if c.from_.lstrip("+") == frm.lstrip("+")]
        if to:
            wanted = {t.strip().lstrip("+") for t in to.split("<")}
            calls = [c for c in calls if c.to.lstrip("+") in wanted]
        return json_response(200, {"api_id": api_id, "calls": [c.call_uuid for c in calls[offset : offset + limit]]})

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
        rows, total = store.list_calls(
            account.auth_id,
            filters=[Filter("dialect", "=", PlivoDialect.name), *list_filters(filters)],
            limit=limit,
            offset=offset,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    base = f"/v1/Account/{account.auth_id}/Call/"
    extra = "".join(f"&{k}={v}" for k, v in request.query.items() if k not in ("limit", "offset"))
    nxt = f"{base}?limit={limit}&offset={offset + limit}{extra}" if offset + limit < total else None
    prev = f"{base}?limit={limit}&offset={max(0, offset - limit)}{extra}" if offset > 0 else None
    objects = [cdr_json(r, auth_id=account.auth_id) for r in rows]
    return json_response(
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
        if call is None or not _ours(call) or not (call.is_queued if status == "queued" else call.is_live):
            raise ApiError(404, f"no {status} call with uuid {uid}")
        snap = call_snapshot(call)
        if status == "queued":
            return json_response(200, queued_call_json(snap, api_id=api_id))
        return json_response(200, live_call_json(snap, api_id=api_id))
    store = request.app[STORE_KEY]
    rec = store.get_call(account.auth_id, uid) or store.get_call_by_request(account.auth_id, uid)
    if rec is None or rec.get("dialect") not in (PlivoDialect.name, None):
        raise ApiError(404, f"call {uid} not found")
    return json_response(200, cdr_json(rec, auth_id=account.auth_id, api_id=api_id))


async def get_trace(request: web.Request) -> web.Response:
    """GET .../Call/{call_uuid}/Trace/: every SIP message of the call (``softswitch.ops``)."""
    account = _authenticate(request)
    uid = request.match_info["call_uuid"]
    ops = request.app.get(OPS_KEY)
    trace = ops.trace(account.auth_id, uid) if ops is not None else None
    if trace is None:
        raise ApiError(404, f"call {uid} not found")
    return json_response(200, {"api_id": request[API_ID_KEY], **trace})


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
    body = {"message": LIVE_MESSAGES[kind], **extra, "api_id": request[API_ID_KEY]}
    if callback is not None and callback[0]:
        manager = request.app[MANAGER_KEY]
        params = {k: str(v) for k, v in body.items()}
        params["call_uuid"] = call.call_uuid
        manager.post_callback(call, f"api-{kind}", callback[0], callback[1], params)
    return json_response(202, body)


async def transfer_call(request: web.Request) -> web.Response:
    """POST /v1/Account/{auth_id}/Call/{call_uuid}/: transfer the A leg to the XML at aleg_url."""
    manager, call = _live(request)
    req = parse_transfer_request(await read_body(request))
    if req.legs != "aleg":
        raise ApiError(400, "legs=bleg|both: transferring the bridged B leg is not supported; use legs=aleg")
    assert req.aleg_url is not None
    await manager.runner.transfer(call, req.aleg_url, req.aleg_method)
    return _accepted(request, "transfer", call)


async def play_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Play/: play audio URLs on the call."""
    manager, call = _live(request)
    req = parse_play_request(await read_body(request))
    await manager.live_ops.play(call, req)
    return _accepted(request, "play", call, (req.callback_url, req.callback_method))


async def stop_play_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Play/: stop what Play started."""
    manager, call = _live(request)
    manager.live_ops.stop_playback(call, "play")
    return web.Response(status=204)


async def speak_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Speak/: text to speech on the call."""
    manager, call = _live(request)
    req = parse_speak_request(await read_body(request))
    await manager.live_ops.speak(call, req)
    return _accepted(request, "speak", call, (req.callback_url, req.callback_method))


async def stop_speak_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Speak/: stop what Speak started."""
    manager, call = _live(request)
    manager.live_ops.stop_playback(call, "speak")
    return web.Response(status=204)


async def dtmf_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/DTMF/: send digits on the A (or B) leg."""
    manager, call = _live(request)
    req = parse_digits_request(await read_body(request), tone_ms=request.app[DIGITS_TONE_MS_KEY])
    manager.live_ops.send_dtmf(call, req.steps, req.leg)
    return _accepted(request, "digits", call, (req.callback_url, req.callback_method))


async def record_call(request: web.Request) -> web.Response:
    """POST .../Call/{call_uuid}/Record/: record the call; answers its URL and id."""
    manager, call = _live(request)
    req = parse_record_request(await read_body(request))
    recording_id, url = manager.live_ops.start_recording(call, req, request[API_ID_KEY])
    return _accepted(request, "record", call, None, url=url, recording_id=recording_id)


async def stop_record_call(request: web.Request) -> web.Response:
    """DELETE .../Call/{call_uuid}/Record/: stop every recording, or the one at ``URL``."""
    manager, call = _live(request)
    data = await read_body(request) if request.can_read_body else {}
    url = data.get("URL") or request.query.get("URL")
    if url is not None and not isinstance(url, str):
        raise ApiError(400, "URL must be a string")
    stopped = manager.live_ops.stop_recording(call, url or None)
    if url and not stopped:
        raise ApiError(404, f"no recording in progress at {url}")
    return web.Response(status=204)



ROUTES: tuple[tuple[str, str, Handler], ...] = (
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
    ("/v1/Account/{auth_id}/Call/{call_uuid}/Trace/", "GET", get_trace),
    ("/v1/Account/{auth_id}/Recording/files/{name}", "GET", recording_file),
    *CONFERENCE_ROUTES,
)


def http_dialect() -> HttpDialect:
    """Plivo v1 as the HTTP application mounts it."""
    return HttpDialect(
        name="plivo",
        prefix="/v1/",
        routes=ROUTES,
        error_response=error_response,
        domain_status=DOMAIN_STATUS,
        openapi=openapi_document,
    )
