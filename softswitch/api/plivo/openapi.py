"""The OpenAPI 3.1 description of the Plivo v1 routes, with the "Make a call" page's parameters and ranges."""

from __future__ import annotations

from typing import Any

from . import (
    BULK_MAX_DEFAULT,
    CALLER_NAME_MAX,
    LEGS,
    LIVE_MESSAGES,
    MACHINE_DETECTION_TIME_DEFAULT,
    MACHINE_DETECTION_TIME_RANGE,
    PLAY_URLS_MAX,
    RECORD_FORMATS,
    RECORD_TIME_LIMIT_DEFAULT,
    RING_TIMEOUT_DEFAULT,
    RING_TIMEOUT_MAX,
    SPEAK_TEXT_MAX,
    TIME_LIMIT_CAP,
    TIME_LIMIT_DEFAULT,
)
from .amd import PLIVO_PARAMETERS
from .conference import openapi_paths

__all__ = ["openapi_document"]


def _param(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes above, with the "Make a call" page's parameters and ranges."""
    url = {"type": "string", "format": "uri"}
    method = {"type": "string", "enum": ["GET", "POST"], "default": "POST"}
    make_call_props: dict[str, Any] = {
        "from": {
            "type": "string",
            "description": "Caller ID: country code and number (or a SIP user).",
        },
        "to": {
            "type": "string",
            "description": "Number or SIP URI; several joined with '<' for a bulk call "
            f"(at most {BULK_MAX_DEFAULT} unique destinations).",
        },
        "answer_url": {
            **url,
            "description": "Fetched on answer (Event=StartApp): three attempts, then fallback_url, within 60 s.",
        },
        "answer_method": method,
        "ring_url": {**url, "description": "Notified on the first 18x (Event=Ring)."},
        "ring_method": method,
        "hangup_url": {**url, "description": "Notified once when the call ends (Event=Hangup)."},
        "hangup_method": method,
        "fallback_url": {**url, "description": "Fetched when answer_url fails."},
        "fallback_method": method,
        "caller_name": {"type": "string", "maxLength": CALLER_NAME_MAX},
        "send_digits": {
            "type": "string",
            "pattern": "^[0-9A-Da-d*#wW]+(@[0-9]+)?$",
            "description": "DTMF after answer; w = 0.5 s, W = 1 s, @ms = tone length.",
        },
        "send_on_preanswer": {"type": "boolean", "default": False},
        "time_limit": {
            "type": "integer",
            "minimum": 1,
            "default": TIME_LIMIT_DEFAULT,
            "description": f"Seconds from answer; values >= {TIME_LIMIT_CAP} end the call after 24 h.",
        },
        "hangup_on_ring": {
            "type": "integer",
            "minimum": 1,
            "description": "Seconds from the first ring.",
        },
        "machine_detection": {"type": "string", "enum": ["true", "hangup"]},
        "machine_detection_time": {
            "type": "integer",
            "minimum": MACHINE_DETECTION_TIME_RANGE[0],
            "maximum": MACHINE_DETECTION_TIME_RANGE[1],
            "default": MACHINE_DETECTION_TIME_DEFAULT,
        },
        "machine_detection_url": url,
        "machine_detection_method": method,
        # The tuning parameters the request accepts, with Plivo's ranges and defaults (amd.py).
        **{
            name: {"type": "integer", "minimum": lo, "maximum": hi, "default": default,
                   "description": f"Answering-machine detection tuning ({unit}, {lo}..{hi})."}
            for name, (field_name, lo, hi, default) in PLIVO_PARAMETERS.items()
            if name != "machine_detection_time"
            for unit in ("words" if field_name == "max_words" else "ms",)
        },
        "sip_headers": {"type": "string", "description": "key=value,... sent as X-PH-key SIP headers; letters and digits."},
        "ring_timeout": {"type": "integer", "minimum": 1, "maximum": RING_TIMEOUT_MAX,
                         "default": RING_TIMEOUT_DEFAULT},
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
    unauthorized = {"description": "Wrong or missing auth id or token (Plivo's plain-text body)",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}
    err_responses["401"] = unauthorized
    auth_path = {"name": "auth_id", "in": "path", "required": True, "schema": {"type": "string"}}
    call_path = {"name": "call_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    list_params = [
        _param(
            "status",
            {"type": "string"},
            "live or queued: list uuids of live/queued calls; else a call_status filter",
        ),
        _param(
            "limit", {"type": "integer", "minimum": 1, "maximum": 20, "default": 20}, "page size"
        ),
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
    legs = {"type": "string", "enum": list(LEGS), "default": "aleg"}
    callback = {
        "callback_url": {**url, "description": "Also receives the response fields."},
        "callback_method": method,
    }
    live_schemas: dict[str, Any] = {
        "Transfer": {
            "type": "object",
            "properties": {
                "legs": {
                    **legs,
                    "description": "Only aleg is supported: the A leg runs the XML at aleg_url.",
                },
                "aleg_url": {
                    **url,
                    "description": "XML to run on the A leg instead of its current XML.",
                },
                "aleg_method": method,
                "bleg_url": url,
                "bleg_method": method,
            },
        },
        "Play": {
            "type": "object",
            "required": ["urls"],
            "properties": {
                "urls": {
                    "type": "string",
                    "description": f"Comma-separated WAV/MP3 URLs (at most {PLAY_URLS_MAX}).",
                },
                "length": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Seconds of audio at most.",
                },
                "legs": legs,
                "loop": {
                    "type": "boolean",
                    "default": False,
                    "description": "Repeat until stopped.",
                },
                "mix": {
                    "type": "boolean",
                    "default": True,
                    "description": "false: stop what the leg hears now and play at once; true: play when the "
                    "current prompt ends (no true mixing in this media engine).",
                },
                **callback,
            },
        },
        "Speak": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string", "maxLength": SPEAK_TEXT_MAX},
                "voice": {
                    "type": "string",
                    "default": "WOMAN",
                    "description": "WOMAN, MAN or Polly.<name> (espeak-ng).",
                },
                "language": {"type": "string", "default": "en-US"},
                "legs": legs,
                "loop": {"type": "boolean", "default": False},
                "mix": {"type": "boolean", "default": True},
                **callback,
            },
        },
        "DTMF": {
            "type": "object",
            "required": ["digits"],
            "properties": {
                "digits": {"type": "string", "pattern": "^[0-9A-Da-d*#wW]+(@[0-9]+)?$"},
                "leg": {"type": "string", "enum": ["aleg", "bleg"], "default": "aleg"},
                **callback,
            },
        },
        "Record": {
            "type": "object",
            "properties": {
                "time_limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": TIME_LIMIT_CAP,
                    "default": RECORD_TIME_LIMIT_DEFAULT,
                },
                "file_format": {"type": "string", "enum": list(RECORD_FORMATS), "default": "mp3"},
                "record_channel_type": {"type": "string", "enum": ["mono"], "default": "mono"},
                "transcription_type": {
                    "type": "string",
                    "description": "Accepted, ignored (no transcription).",
                },
                "transcription_url": url,
                "transcription_method": method,
                "callback_url": {
                    **url,
                    "description": "Posted when the recording ends: api_id, record_url, "
                    "call_uuid, recording_id, recording_duration(_ms), recording_start_ms, recording_end_ms.",
                },
                "callback_method": method,
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["message", "api_id"],
            "properties": {
                "message": {"type": "string", "enum": sorted(LIVE_MESSAGES.values())},
                "api_id": {"type": "string"},
                "url": {
                    "type": "string",
                    "format": "uri",
                    "description": "Record only: where the file is served.",
                },
                "recording_id": {"type": "string", "description": "Record only."},
            },
        },
    }

    def live_op(summary: str, schema: str | None, ok: str = "202") -> dict[str, Any]:
        op: dict[str, Any] = {"summary": summary, "parameters": [auth_path, call_path]}
        if schema is not None:
            body = {"$ref": f"#/components/schemas/{schema}"}
            op["requestBody"] = {
                "required": schema in ("Play", "Speak", "DTMF"),
                "content": {
                    "application/json": {"schema": body},
                    "application/x-www-form-urlencoded": {"schema": body},
                },
            }
        if ok == "202":
            op["responses"] = {
                "202": {
                    "description": "accepted",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                    },
                },
                **err_responses,
            }
        else:
            op["responses"] = {"204": {"description": "stopped"}, **err_responses}
        return op

    return {
        "openapi": "3.1.0",
        "info": {"title": "softswitch: Plivo-compatible Voice API", "version": "1"},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["api_id", "error"],
                    "properties": {"api_id": {"type": "string"}, "error": {"type": "string"}},
                },
                "MakeCall": {
                    "type": "object",
                    "required": ["from", "to", "answer_url"],
                    "properties": make_call_props,
                },
                "CallFired": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string", "enum": ["call fired", "call queued"]},
                        "request_uuid": {
                            "oneOf": [
                                {"type": "string"},
                                {"type": "array", "items": {"type": "string"}},
                            ]
                        },
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
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MakeCall"}
                            },
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/MakeCall"}
                            },
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "call fired",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CallFired"}
                                }
                            },
                        },
                        "200": {
                            "description": "call queued behind the calls-per-second limit",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CallFired"}
                                }
                            },
                        },
                        **err_responses,
                    },
                },
                "get": {
                    "summary": "List call records (or live/queued call uuids)",
                    "parameters": [auth_path, *list_params],
                    "responses": {
                        "200": {"description": "{api_id, meta, objects} or {api_id, calls}"},
                        **err_responses,
                    },
                },
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/": {
                "get": {
                    "summary": "Retrieve a call record (status=live|queued: the live call)",
                    "parameters": [
                        auth_path,
                        call_path,
                        _param(
                            "status", {"type": "string", "enum": ["live", "queued"]}, "live view"
                        ),
                    ],
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
                "delete": {
                    **live_op("Stop recording (all, or the one at URL)", None, "204"),
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"URL": {"type": "string", "format": "uri"}},
                                }
                            }
                        },
                    },
                },
            },
            "/v1/Account/{auth_id}/Call/{call_uuid}/Trace/": {
                "get": {
                    "summary": "The call's SIP messages, sent and received, with times (bounded per call)",
                    "parameters": [auth_path, call_path],
                    "responses": {"200": {"description": "{api_id, call_uuid, live, messages, dropped, media}"},
                                  **err_responses},
                },
            },
            "/v1/Account/{auth_id}/Recording/files/{name}": {
                "get": {
                    "summary": "A finished recording: the owning account's Basic credentials, or the "
                    "signed URL handed out (expires, sig)",
                    "security": [{"basic": []}, {}],
                    "parameters": [
                        auth_path,
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f-]{36}\\.(wav|mp3)$"},
                        },
                        {
                            "name": "expires",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer"},
                        },
                        {
                            "name": "sig",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {"description": "the audio", "content": {"audio/wav": {}, "audio/mpeg": {}}},
                        "401": unauthorized,
                        "403": {"description": "signed URL expired or signature wrong",
                                "content": {"application/json": {"schema": error}}},
                        "404": {"description": "no such recording, or still in progress",
                                "content": {"application/json": {"schema": error}}},
                    },
                },
            },
            **openapi_paths(auth_path, err_responses),
            "/v1/Account/{auth_id}/Request/{request_uuid}/": {
                "delete": {
                    "summary": "Cancel a queued or ringing call by its request uuid",
                    "parameters": [
                        auth_path,
                        {
                            "name": "request_uuid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {"204": {"description": "cancelled"}, **err_responses},
                },
            },
        },
    }
