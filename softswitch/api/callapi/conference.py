"""Twilio's conference Participants resource over the core's rooms
(:mod:`softswitch.conference`), under both account prefixes::

    GET    {base}/Conferences/{ConferenceSid}/Participants.json             the participants
    GET    {base}/Conferences/{ConferenceSid}/Participants/{CallSid}.json   one participant
    POST   {base}/Conferences/{ConferenceSid}/Participants/{CallSid}.json   Muted, Hold
    DELETE {base}/Conferences/{ConferenceSid}/Participants/{CallSid}.json   out of the room

A ``ConferenceSid`` is ``CF`` + the room's uuid (:func:`.twiml.conference_sid`). ``Hold``
takes the participant out of the mix both ways (``HoldUrl`` is not played: a held
participant hears silence) and posts ``participant-hold``/``participant-unhold`` to the
conference's ``statusCallback`` when subscribed (``statusCallbackEvent`` ``hold``);
``Muted`` posts ``participant-mute``/``participant-unmute``. Removing a participant takes
its call out of the room; its TwiML goes on after the ``<Dial>``, as Twilio's does. Creating
participants (dialling out into a room) is not built.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...call import AccountLimits
from ...conference import Member, Room
from ..http import MANAGER_KEY, Handler, HttpError, authenticate_basic, json_response, read_body
from .codes import call_sid, call_uuid_of, rfc2822
from .twiml import conference_sid

__all__ = ["participant_routes"]


def _authenticate(request: web.Request) -> AccountLimits:
    account = authenticate_basic(request)
    if request.match_info.get("auth_id") != account.auth_id:
        raise HttpError(404, f"The requested resource {request.path} was not found")
    return account


def _room(request: web.Request, account: AccountLimits) -> Room:
    sid = request.match_info["conference_sid"]
    for room in request.app[MANAGER_KEY].conferences.rooms(account.auth_id):
        if conference_sid(room.uuid) == sid:
            return room
    raise HttpError(
        404, f"The requested resource {request.path} was not found: no conference {sid[:40]}"
    )


def _member(request: web.Request, room: Room) -> Member:
    sid = request.match_info["call_sid"].removesuffix(".json")
    uid = call_uuid_of(sid)
    for m in room.members.values():
        if m.call_uuid == uid:
            return m
    raise HttpError(
        404, f"The requested resource {request.path} was not found: no participant {sid[:40]}"
    )


def _participant(
    request: web.Request, account: AccountLimits, room: Room, m: Member
) -> dict[str, Any]:
    prefix = request.path.split("/Conferences/", 1)[0]
    conf = conference_sid(room.uuid)
    coached = None
    if m.verb.coach:
        coached = call_sid(m.verb.coach)
    return {
        "account_sid": account.auth_id,
        "call_sid": call_sid(m.call_uuid),
        "conference_sid": conf,
        "label": None,
        "call_sid_to_coach": coached,
        "coaching": coached is not None,
        "date_created": rfc2822(m.joined_at),
        "date_updated": rfc2822(m.joined_at),
        "end_conference_on_exit": m.verb.end_on_exit,
        "start_conference_on_enter": m.verb.start_on_enter,
        "muted": m.muted,
        "hold": m.hold,
        "status": "connected",
        "uri": f"{prefix}/Conferences/{conf}/Participants/{call_sid(m.call_uuid)}.json",
    }


def _flag(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise HttpError(400, f"{name} must be true or false")
    return text == "true"


async def list_participants(request: web.Request) -> web.Response:
    account = _authenticate(request)
    room = _room(request, account)
    rows = [_participant(request, account, room, m) for m in room.members.values()]
    return json_response(
        200,
        {
            "participants": rows,
            "page": 0,
            "page_size": len(rows),
            "start": 0,
            "end": max(0, len(rows) - 1),
            "uri": request.path,
            "first_page_uri": request.path,
            "next_page_uri": None,
            "previous_page_uri": None,
        },
    )


async def get_participant(request: web.Request) -> web.Response:
    account = _authenticate(request)
    room = _room(request, account)
    return json_response(200, _participant(request, account, room, _member(request, room)))


async def update_participant(request: web.Request) -> web.Response:
    account = _authenticate(request)
    room = _room(request, account)
    member = _member(request, room)
    data = dict(await read_body(request))
    muted, hold = _flag(data, "Muted"), _flag(data, "Hold")
    if hold is not None:
        room.set_hold([member], hold)
    if muted is not None and muted != member.muted:
        room.set_mute([member], muted)
    return json_response(200, _participant(request, account, room, member))


async def delete_participant(request: web.Request) -> web.Response:
    account = _authenticate(request)
    room = _room(request, account)
    room.kick([_member(request, room)])
    return web.Response(status=204)


def participant_routes(base: str) -> list[tuple[str, str, Handler]]:
    """The Participants routes under one account prefix."""
    one = f"{base}/Conferences/{{conference_sid}}/Participants/{{call_sid}}.json"
    return [
        (f"{base}/Conferences/{{conference_sid}}/Participants.json", "GET", list_participants),
        (one, "GET", get_participant),
        (one, "POST", update_participant),
        (one, "DELETE", delete_participant),
    ]
