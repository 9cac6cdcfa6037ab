"""Plivo v1 Conference API over the core's rooms (:mod:`softswitch.conference`)::

    GET    /v1/Account/{auth_id}/Conference/                       room names
    DELETE /v1/Account/{auth_id}/Conference/                       hang up every room
    GET    /v1/Account/{auth_id}/Conference/{name}/                the room and its members
    DELETE /v1/Account/{auth_id}/Conference/{name}/                hang up the room
    DELETE /v1/Account/{auth_id}/Conference/{name}/Member/{id}/    hang up members
    POST   .../Member/{id}/Kick/                                   out of the room
    POST   .../Member/{id}/Mute/      (DELETE: unmute)
    POST   .../Member/{id}/Deaf/      (DELETE: undeaf)
    POST   .../Member/{id}/Play/      ``url``  (DELETE: stop)
    POST   .../Member/{id}/Speak/     ``text``, ``voice``, ``language``  (DELETE: stop)
    POST   /v1/Account/{auth_id}/Conference/{name}/Record/         ``file_format`` (DELETE: stop)

``{id}`` is a member id, several separated by commas, or ``all``. As Plivo answers: the
actions 202 with ``{"message", "member_id": [...], "api_id"}``, their DELETEs and the hangups
204, an unknown room or member 404. Hanging a room up ends its members' calls.

``callback_url``/``callback_method`` (body or query) on a member operation or a room hangup:
the answer's fields (``message``, ``member_id`` comma-separated, ``api_id``) and
``conference_name`` are also posted there, signed, through the webhook outbox, as Plivo's
asynchronous requests post their response. On ``Record/`` they are the recording's callback
instead, posted when the recording ends with Plivo's ``api_id``, ``record_url``,
``recording_id``, ``conference_name``, ``recording_duration`` (s),
``recording_duration_ms``, ``recording_start_ms``, ``recording_end_ms``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ...admission import AccountLimits
from ...conference import Member, Room
from ..http import API_ID_KEY, MANAGER_KEY, Handler, authenticate_basic, json_response, read_body
from ..values import is_http_url
from . import ApiError
from .request import _method, _url
from .signing import SIGNATURE

__all__ = ["CONFERENCE_ROUTES"]

_ROOM = "/v1/Account/{auth_id}/Conference/{name}/"
_MEMBER = _ROOM + "Member/{member_id}/"


_ACCOUNT_KEY: web.RequestKey[AccountLimits] = web.RequestKey("conference_account", AccountLimits)


def _rooms(request: web.Request) -> tuple[Any, str]:
    account = authenticate_basic(request)
    if request.match_info.get("auth_id") != account.auth_id:
        raise ApiError(401, "authentication failed: the account in the URL is not yours")
    request[_ACCOUNT_KEY] = account
    return request.app[MANAGER_KEY], account.auth_id


async def _params(request: web.Request) -> dict[str, Any]:
    """The request's parameters: its body (JSON or form), else its query string
    (``body_exists``: the body may have been read and cached before the handler)."""
    if request.body_exists:
        return dict(await read_body(request))
    return dict(request.query)


def _who(request: web.Request) -> tuple[Any, AccountLimits]:
    return request.app[MANAGER_KEY], request[_ACCOUNT_KEY]


def _callback(data: dict[str, Any]) -> tuple[str | None, str]:
    return _url(data, "callback_url"), _method(data, "callback_method")


def _post(
    who: tuple[Any, AccountLimits],
    room: Room,
    event: str,
    url: str,
    method: str,
    params: dict[str, Any],
) -> None:
    """Queue a signed callback about ``room`` (the outbox orders them per room); ``who``:
    the manager and the requesting account."""
    manager, account = who
    form = {k: ",".join(v) if isinstance(v, list) else str(v) for k, v in params.items()}
    try:
        manager.outbox.post(
            room.uuid, event, url, method, form, auth_token=account.auth_token, signature=SIGNATURE
        )
    except Exception:  # a dead outbox never fails the operation
        import logging  # noqa: PLC0415

        logging.getLogger("softswitch.conference").exception(
            "conference %s: could not queue the %s callback", room.name, event
        )


async def _done(
    request: web.Request,
    room: Room,
    message: str,
    ids: list[str],
    status: int = 202,
    data: dict[str, Any] | None = None,
) -> web.Response:
    """Plivo's answer to a member operation; its fields also go to ``callback_url``."""
    body = {"message": message, "member_id": ids, "api_id": request[API_ID_KEY]}
    url, method = _callback(data if data is not None else await _params(request))
    if url:
        _post(
            _who(request),
            room,
            f"api-conference-{message.split()[0]}",
            url,
            method,
            {**body, "conference_name": room.name},
        )
    if status == 204:
        return web.Response(status=204)
    return json_response(status, body)


def _room(request: web.Request) -> tuple[Any, Room]:
    manager, account = _rooms(request)
    name = request.match_info["name"]
    room = manager.conferences.get(account, name)
    if room is None:
        raise ApiError(404, f"conference {name} not found")
    return manager, room


def _members(request: web.Request) -> tuple[Any, Room, list[Member]]:
    manager, room = _room(request)
    raw = request.match_info["member_id"]
    ids = "all" if raw == "all" else [i.strip() for i in raw.split(",") if i.strip()]
    members = room.find(ids)
    if not members:
        raise ApiError(404, f"member {raw} not found in conference {room.name}")
    return manager, room, members


async def list_conferences(request: web.Request) -> web.Response:
    manager, account = _rooms(request)
    names = await manager.room_names(account)
    return json_response(200, {"api_id": request[API_ID_KEY], "conferences": names})


async def get_conference(request: web.Request) -> web.Response:
    manager, room = _room(request)
    now = time.time()
    members = []
    for m in room.members.values():
        call = manager.calls.get(m.call_uuid)
        spec = getattr(call, "spec", None)
        members.append(
            {
                "muted": m.muted,
                "member_id": m.member_id,
                "deaf": m.deaf,
                "from": getattr(spec, "from_", "") or "",
                "to": getattr(call, "to", "") or "",
                "caller_name": getattr(spec, "caller_name", None) or "",
                "direction": getattr(call, "direction", "outbound"),
                "call_uuid": m.call_uuid,
                "join_time": str(int(now - m.joined_at)),
            }
        )
    return json_response(
        200,
        {
            "api_id": request[API_ID_KEY],
            "conference_name": room.name,
            "conference_run_time": str(int(now - room.created_at)),
            "conference_member_count": str(len(room.members)),
            "members": members,
        },
    )


async def _hangup(manager: Any, members: list[Member]) -> None:
    """End the members' calls as an API request does (their records say so)."""
    for m in members:
        call = manager.calls.get(m.call_uuid)
        if call is not None and not call.finished.is_set():
            await manager.hangup(call)


async def _hangup_room(manager: Any, room: Room) -> None:
    members = list(room.members.values())
    await _hangup(manager, members)
    room.end("api")


async def hangup_conference(request: web.Request) -> web.Response:
    manager, room = _room(request)
    data = await _params(request)
    ids = list(room.members)
    await _hangup_room(manager, room)
    return await _done(request, room, "conference hung up", ids, 204, data)


async def hangup_all(request: web.Request) -> web.Response:
    manager, account = _rooms(request)
    for room in manager.conferences.rooms(account):
        await _hangup_room(manager, room)
    return web.Response(status=204)


async def hangup_member(request: web.Request) -> web.Response:
    manager, room, members = _members(request)
    data = await _params(request)
    await _hangup(manager, members)
    return await _done(request, room, "hangup", [m.member_id for m in members], 204, data)


async def kick_member(request: web.Request) -> web.Response:
    _, room, members = _members(request)
    data = await _params(request)
    return await _done(request, room, "kicked", room.kick(members), data=data)


async def mute_member(request: web.Request) -> web.Response:
    _, room, members = _members(request)
    data = await _params(request)
    return await _done(request, room, "muted", room.set_mute(members, True), data=data)


async def unmute_member(request: web.Request) -> web.Response:
    _, room, members = _members(request)
    data = await _params(request)
    return await _done(request, room, "unmuted", room.set_mute(members, False), 204, data)


async def deaf_member(request: web.Request) -> web.Response:
    _, room, members = _members(request)
    data = await _params(request)
    return await _done(request, room, "deaf", room.set_deaf(members, True), data=data)


async def undeaf_member(request: web.Request) -> web.Response:
    _, room, members = _members(request)
    data = await _params(request)
    return await _done(request, room, "undeaf", room.set_deaf(members, False), 204, data)


def _everyone(room: Room, members: list[Member]) -> list[Member] | None:
    """``all`` plays once into the room's mix (None), else to each member."""
    return None if len(members) == len(room.members) and len(members) > 1 else members


async def play_member(request: web.Request) -> web.Response:
    manager, room, members = _members(request)
    data = await read_body(request)
    url = data.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ApiError(400, "url is required")
    url = url.strip()
    if not is_http_url(url):
        raise ApiError(400, "url must be an http(s) URL")
    from ...app.sources import MediaCache  # noqa: PLC0415

    cache = MediaCache(manager.data_dir / "cache" / "media", allowed_dirs=(manager.data_dir,))
    path = await cache.path_for(url)
    ids = await manager.conferences.play_url(room, _everyone(room, members), path)
    return await _done(request, room, "play queued into conference", ids, data=data)


async def stop_play_member(request: web.Request) -> web.Response:
    manager, room, members = _members(request)
    data = await _params(request)
    ids = manager.conferences.stop_member_play(members)
    return await _done(request, room, "playing stopped", ids, 204, data)


async def speak_member(request: web.Request) -> web.Response:
    from ...app.sources import SHARED_TTS_CACHE, espeak_voice  # noqa: PLC0415

    manager, room, members = _members(request)
    data = await read_body(request)
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "text is required")
    voice = data.get("voice") or "WOMAN"
    language = data.get("language") or "en-US"
    if voice not in ("WOMAN", "MAN") or not isinstance(language, str):
        raise ApiError(400, "voice must be WOMAN or MAN")
    ids = await manager.conferences.speak(
        room, _everyone(room, members), text, espeak_voice(voice, language), SHARED_TTS_CACHE
    )
    return await _done(request, room, "speak queued into conference", ids, data=data)


async def record_conference(request: web.Request) -> web.Response:
    manager, room = _room(request)
    data = await _params(request)
    callback_url, callback_method = _callback(data)
    fmt = data.get("file_format") or "mp3"
    if fmt not in ("mp3", "wav"):
        raise ApiError(400, "file_format must be mp3 or wav")
    if room.recording is not None:
        rec = room.recording
        return json_response(
            202,
            {
                "api_id": request[API_ID_KEY],
                "message": "conference recording started",
                "recording_id": rec["id"],
                "url": rec["url"],
            },
        )
    first = next(iter(room.members.values()), None)
    call = manager.calls.get(first.call_uuid) if first else None
    import uuid  # noqa: PLC0415

    recording_id = str(uuid.uuid4())
    name = f"{recording_id}.{fmt}"
    path = manager.recording_path(name, room.account)
    path.parent.mkdir(parents=True, exist_ok=True)
    if call is not None:
        url = manager.recording_url(call, name)
    else:
        url = f"{manager.public_url}/v1/Account/{room.account}/Recording/files/{name}"
    api_id = request[API_ID_KEY]
    who = _who(request)

    def on_done(rec: dict[str, Any]) -> None:
        if callback_url is None:
            return
        duration_ms = int(rec["duration_s"] * 1000)
        _post(
            who,
            room,
            "conference-record",
            callback_url,
            callback_method,
            {
                "api_id": api_id,
                "record_url": rec["url"],
                "recording_id": rec["id"],
                "conference_name": room.name,
                "recording_duration": str(round(rec["duration_s"])),
                "recording_duration_ms": str(duration_ms),
                "recording_start_ms": str(int(rec["started"] * 1000)),
                "recording_end_ms": str(int(rec["ended"] * 1000)),
            },
        )

    room.start_recording(str(path), fmt, url, recording_id, on_done=on_done)
    return json_response(
        202,
        {
            "api_id": request[API_ID_KEY],
            "message": "conference recording started",
            "recording_id": recording_id,
            "url": url,
        },
    )


async def stop_record_conference(request: web.Request) -> web.Response:
    _, room = _room(request)
    room.stop_recording()
    return web.Response(status=204)


CONFERENCE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("/v1/Account/{auth_id}/Conference/", "GET", list_conferences),
    ("/v1/Account/{auth_id}/Conference/", "DELETE", hangup_all),
    (_ROOM, "GET", get_conference),
    (_ROOM, "DELETE", hangup_conference),
    (_ROOM + "Record/", "POST", record_conference),
    (_ROOM + "Record/", "DELETE", stop_record_conference),
    (_MEMBER, "DELETE", hangup_member),
    (_MEMBER + "Kick/", "POST", kick_member),
    (_MEMBER + "Mute/", "POST", mute_member),
    (_MEMBER + "Mute/", "DELETE", unmute_member),
    (_MEMBER + "Deaf/", "POST", deaf_member),
    (_MEMBER + "Deaf/", "DELETE", undeaf_member),
    (_MEMBER + "Play/", "POST", play_member),
    (_MEMBER + "Play/", "DELETE", stop_play_member),
    (_MEMBER + "Speak/", "POST", speak_member),
    (_MEMBER + "Speak/", "DELETE", stop_play_member),
)


def openapi_paths(auth_path: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """The Conference API's part of the OpenAPI document."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    member = {
        "name": "member_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "a member id, several separated by commas, or all",
    }

    def op(summary: str, status: str, params: list[Any], body: dict[str, Any] | None = None) -> Any:
        out: dict[str, Any] = {
            "summary": summary,
            "parameters": [auth_path, *params],
            "responses": {status: {"description": summary}, **errors},
        }
        if status != "200":
            callback = {
                "callback_url": {
                    "type": "string",
                    "format": "uri",
                    "description": "also receives the answer's fields (Record/: the "
                    "recording's callback when it ends)",
                },
                "callback_method": {"type": "string", "enum": ["GET", "POST"]},
            }
            body = {**(body or {}), **callback}
        if body is not None:
            out["requestBody"] = {
                "required": False,
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": body}},
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "properties": body}
                    },
                },
            }
        return out

    text = {"type": "string"}
    room = [name]
    one = [name, member]
    return {
        "/v1/Account/{auth_id}/Conference/": {
            "get": op("List the rooms (names)", "200", []),
            "delete": op("Hang up every room (their members' calls end)", "204", []),
        },
        _ROOM: {
            "get": op("A room and its members", "200", room),
            "delete": op("Hang up a room (its members' calls end)", "204", room),
        },
        _ROOM + "Record/": {
            "post": op(
                "Record the room's whole mix",
                "202",
                room,
                {"file_format": {"type": "string", "enum": ["mp3", "wav"]}},
            ),
            "delete": op("Stop recording the room", "204", room),
        },
        _MEMBER: {"delete": op("Hang up members' calls", "204", one)},
        _MEMBER + "Kick/": {"post": op("Take members out of the room", "202", one)},
        _MEMBER + "Mute/": {
            "post": op("Mute members (they still hear)", "202", one),
            "delete": op("Unmute members", "204", one),
        },
        _MEMBER + "Deaf/": {
            "post": op("Deafen members (they still talk)", "202", one),
            "delete": op("Undeafen members", "204", one),
        },
        _MEMBER + "Play/": {
            "post": op(
                "Play an audio URL to members (all: into the room)",
                "202",
                one,
                {"url": {**text, "format": "uri"}},
            ),
            "delete": op("Stop what was played to members", "204", one),
        },
        _MEMBER + "Speak/": {
            "post": op(
                "Speak text to members (all: into the room)",
                "202",
                one,
                {"text": text, "voice": {**text, "enum": ["WOMAN", "MAN"]}, "language": text},
            ),
            "delete": op("Stop what was spoken to members", "204", one),
        },
    }
