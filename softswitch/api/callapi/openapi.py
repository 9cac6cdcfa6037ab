"""The OpenAPI 3.1 description of the CallAPI routes (both account prefixes)."""

from __future__ import annotations

from typing import Any

from .filters import SORT_KEYS
from .request import AMD_PARAMETERS, STATUS_EVENTS, TIME_LIMIT_DEFAULT, TIMEOUT_DEFAULT, TIMEOUT_MAX

__all__ = ["openapi_document"]

_BASES = ("/call/2012-04-24/Accounts/{AccountSid}", "/2010-04-01/Accounts/{AccountSid}")
_STATUSES = [
    "queued",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
]


def openapi_document() -> dict[str, Any]:
    url = {"type": "string", "format": "uri"}
    method = {"type": "string", "enum": ["GET", "POST"], "default": "POST"}
    create: dict[str, Any] = {
        "type": "object",
        "required": ["To", "From"],
        "properties": {
            "To": {
                "type": "string",
                "description": "Phone number or SIP URI to call; a SIP address may end in "
                "?X-Name=value&... (custom X- headers on the INVITE).",
            },
            "From": {"type": "string", "description": "Caller id."},
            "Url": {**url, "description": "TwiML fetched when the call connects (or give Twiml)."},
            "Twiml": {"type": "string", "description": "An inline TwiML document instead of Url."},
            "Method": method,
            "FallbackUrl": {**url, "description": "Fetched when Url fails."},
            "FallbackMethod": method,
            "StatusCallback": {**url, "description": "Receives the status events."},
            "StatusCallbackMethod": method,
            "StatusCallbackEvent": {
                "type": "array",
                "items": {"type": "string", "enum": list(STATUS_EVENTS)},
                "description": "Events to report (comma/space separated or repeated); "
                "default 'completed' when StatusCallback is given.",
            },
            "Timeout": {
                "type": "integer",
                "minimum": 1,
                "maximum": TIMEOUT_MAX,
                "default": TIMEOUT_DEFAULT,
                "description": "Seconds to ring before no-answer (larger values are capped).",
            },
            "TimeLimit": {"type": "integer", "minimum": 1, "default": TIME_LIMIT_DEFAULT},
            "CallerName": {"type": "string", "maxLength": 50},
            "SendDigits": {
                "type": "string",
                "pattern": "^[0-9*#wW]{1,32}$",
                "description": "Keys sent once answered (w: 0.5 s pause); MachineDetection is "
                "then ignored.",
            },
            "SipAuthUsername": {
                "type": "string",
                "description": "Digest user for the callee's 401/407 challenge (also Username).",
            },
            "SipAuthPassword": {"type": "string", "description": "Its password (also Password)."},
            "DetectVoicemail": {
                "type": "boolean",
                "default": False,
                "description": "Adds VoicemailDetector (person_found|voicemail) to later callbacks.",
            },
            "MachineDetection": {
                "type": "string",
                "enum": ["Enable", "DetectMessageEnd"],
                "description": "Adds AnsweredBy and MachineDetectionDuration. DetectMessageEnd: "
                "a machine's result waits for the end of its greeting (machine_end_beep, "
                "machine_end_silence, machine_end_other).",
            },
            "AsyncAmd": {"type": "boolean", "default": False},
            "AsyncAmdStatusCallback": url,
            "AsyncAmdStatusCallbackMethod": method,
            **{
                name: {"type": "integer", "minimum": lo, "maximum": hi}
                for name, (_, lo, hi, _) in AMD_PARAMETERS.items()
            },
        },
    }
    update: dict[str, Any] = {
        "type": "object",
        "properties": {
            "Url": {**url, "description": "Redirect the running call to this TwiML at once."},
            "Method": method,
            "Twiml": {"type": "string", "description": "Redirect to an inline TwiML document."},
            "Status": {"type": "string", "enum": ["completed", "canceled"]},
            "FallbackUrl": {
                **url,
                "description": "Requested when the new Url (or a later document) fails.",
            },
            "FallbackMethod": method,
            "StatusCallback": {
                **url,
                "description": "Where the call's status events go from now on (the "
                "subscribed events stay; none yet: completed).",
            },
            "StatusCallbackMethod": method,
        },
    }
    error = {"$ref": "#/components/schemas/CallApiError"}
    call = {"$ref": "#/components/schemas/CallApiCall"}

    def errs(*codes: int) -> dict[str, Any]:
        return {
            str(c): {"description": "Error", "content": {"application/json": {"schema": error}}}
            for c in codes
        }

    def ok(code: int, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            str(code): {"description": text, "content": {"application/json": {"schema": schema}}}
        }

    def form(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        }

    sid = {"name": "AccountSid", "in": "path", "required": True, "schema": {"type": "string"}}
    call_sid = {
        "name": "CallSid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^CA[0-9a-f]{32}$"},
    }
    list_params = [
        sid,
        *(
            {"name": n, "in": "query", "schema": {"type": "string"}}
            for n in ("To", "From", "ParentCallSid", "StartTime", "StartTime<", "StartTime>")
        ),
        {"name": "Status", "in": "query", "schema": {"type": "string", "enum": _STATUSES}},
        {
            "name": "SortBy",
            "in": "query",
            "schema": {"type": "string", "pattern": f"^({'|'.join(SORT_KEYS)})(:(asc|desc))?$"},
            "description": "Sort key and direction (ascending by default); ties newest first.",
        },
        {"name": "Page", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
        {
            "name": "PageSize",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
        },
    ]
    paths: dict[str, Any] = {}
    for base in _BASES:
        paths[f"{base}/Calls.json"] = {
            "post": {
                "summary": "Make a call (CallAPI)",
                "parameters": [sid],
                "requestBody": form(create),
                "responses": {**ok(201, call, "The call, queued"), **errs(400, 401, 404, 429, 503)},
            },
            "get": {
                "summary": "List calls (CallAPI)",
                "parameters": list_params,
                "responses": {
                    **ok(
                        200,
                        {
                            "type": "object",
                            "properties": {"calls": {"type": "array", "items": call}},
                        },
                        "One page of calls",
                    ),
                    **errs(400, 401, 404),
                },
            },
        }
        paths[f"{base}/Calls/{{CallSid}}.json"] = {
            "get": {
                "summary": "Fetch a call (CallAPI)",
                "parameters": [sid, call_sid],
                "responses": {**ok(200, call, "The call"), **errs(401, 404)},
            },
            "post": {
                "summary": "Redirect or end a call (CallAPI)",
                "parameters": [sid, call_sid],
                "requestBody": form(update),
                "responses": {**ok(200, call, "The call"), **errs(400, 401, 404)},
            },
        }
        paths[f"{base}/Calls/{{CallSid}}/Trace.json"] = {
            "get": {
                "summary": "The call's SIP messages, sent and received, with times (bounded per call)",
                "parameters": [sid, call_sid],
                "responses": {
                    **ok(
                        200, {"type": "object"}, "{sid, call_uuid, live, messages, dropped, media}"
                    ),
                    **errs(401, 404),
                },
            },
        }
        conf_sid = {
            "name": "ConferenceSid",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^CF[0-9a-f]{32}$"},
        }
        participant = {"type": "object", "description": "Twilio's participant resource"}
        paths[f"{base}/Conferences/{{ConferenceSid}}/Participants.json"] = {
            "get": {
                "summary": "The participants of a live conference",
                "parameters": [sid, conf_sid],
                "responses": {
                    **ok(200, {"type": "object"}, "{participants: [...]}"),
                    **errs(401, 404),
                },
            }
        }
        flag = {"type": "string", "enum": ["true", "false"]}
        paths[f"{base}/Conferences/{{ConferenceSid}}/Participants/{{CallSid}}.json"] = {
            "get": {
                "summary": "A participant",
                "parameters": [sid, conf_sid, call_sid],
                "responses": {**ok(200, participant, "The participant"), **errs(401, 404)},
            },
            "post": {
                "summary": "Hold (out of the mix both ways) or mute a participant",
                "parameters": [sid, conf_sid, call_sid],
                "requestBody": form(
                    {"type": "object", "properties": {"Hold": flag, "Muted": flag}}
                ),
                "responses": {**ok(200, participant, "The participant"), **errs(400, 401, 404)},
            },
            "delete": {
                "summary": "Take the participant out of the room (its TwiML goes on)",
                "parameters": [sid, conf_sid, call_sid],
                "responses": {"204": {"description": "Removed"}, **errs(401, 404)},
            },
        }
    schemas = {
        "CallApiError": {
            "type": "object",
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "more_info": {"type": "string"},
                "status": {"type": "integer"},
            },
        },
        "CallApiCall": {
            "type": "object",
            "properties": {
                "sid": {"type": "string"},
                "account_sid": {"type": "string"},
                "parent_call_sid": {"type": ["string", "null"]},
                "date_created": {"type": "string"},
                "date_updated": {"type": "string"},
                "to": {"type": "string"},
                "from": {"type": "string"},
                "status": {"type": "string", "enum": _STATUSES},
                "start_time": {"type": ["string", "null"]},
                "end_time": {"type": ["string", "null"]},
                "duration": {"type": ["integer", "null"]},
                "direction": {"type": "string", "enum": ["outbound-api", "inbound"]},
                "answered_by": {"type": ["string", "null"]},
                "api_version": {"type": "string"},
                "uri": {"type": "string"},
            },
        },
    }
    return {
        "info": {"title": "softswitch CallAPI", "version": "2012-04-24"},
        "components": {"schemas": schemas},
        "paths": paths,
    }
