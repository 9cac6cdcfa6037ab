"""The OpenAPI 3.1 part of the ``/v0.1/`` routes (DIALECTS.md §1.3, §1.4)."""

from __future__ import annotations

from typing import Any

from .request import (
    AMD_MODES,
    AMD_PARAMETERS,
    GATEWAY_RETRIES_DEFAULT,
    GATEWAY_TIMEOUT_DEFAULT,
    GROUP_CONFIRM_TIMEOUT_S,
    GROUP_REJECT_CAUSES_DEFAULT,
)

__all__ = ["openapi_document"]

_URL = {"type": "string", "format": "uri"}


def _form(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": props, "required": required}
            }
        }
    }


def _result(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {"Success": {"type": "boolean"}, "Message": {"type": "string"}, **(extra or {})}
    return {
        "200": {
            "description": "Always HTTP 200 once authenticated; Success false with the framework's message "
            "for a validation or lookup failure.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": props,
                        "required": ["Success", "Message"],
                    }
                }
            },
        },
        "401": {"description": "HTTP Basic auth failed"},
    }


def _post(
    summary: str, props: dict[str, Any], required: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "tags": ["v0.1"],
            "requestBody": _form(props, required),
            "responses": _result(extra),
        }
    }


_FILE_NAME = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
    "description": "The recording's file name in the account's recordings (the format is "
    "appended; default: a uuid). A name with a directory part or '..' is refused.",
}


def _conference_paths(p: str) -> dict[str, Any]:
    """The ``Conference*`` endpoints over the rooms RESTXML ``<Conference>`` makes."""
    s = {"type": "string"}
    room = {"ConferenceName": s}
    member = {
        **room,
        "MemberID": {**s, "description": "Member ids separated by commas, or all."},
    }
    ids = {"MemberID": {"type": "array", "items": s}}
    filters = {
        "MemberFilter": {**s, "description": "Member ids separated by commas."},
        "CallUUIDFilter": {**s, "description": "Call uuids separated by commas."},
        "MutedFilter": {**s, "enum": ["true", "false"]},
        "DeafFilter": {**s, "enum": ["true", "false"]},
    }
    listing = {
        "List": {
            "type": "object",
            "description": "Rooms by name: ConferenceUUID, "
            "ConferenceRunTime, ConferenceName, ConferenceMemberCount, Members.",
        }
    }
    out: dict[str, Any] = {}
    for action, what in (
        ("Mute", "Mute members (they still hear)"),
        ("Unmute", "Unmute members"),
        ("Deaf", "Deafen members (they still talk)"),
        ("Undeaf", "Undeafen members"),
        ("Kick", "Take members out of the room (their RESTXML goes on)"),
        ("Hangup", "Hang up members' calls"),
    ):
        out[f"{p}Conference{action}/"] = _post(what, member, ["ConferenceName", "MemberID"], ids)
    out[f"{p}ConferenceRecordStart/"] = _post(
        "Record the room's whole mix",
        {
            **room,
            "FileFormat": {**s, "enum": ["mp3", "wav"]},
            "FilePath": s,
            "FileName": _FILE_NAME,
        },
        ["ConferenceName"],
        {"RecordFile": _URL},
    )
    out[f"{p}ConferenceRecordStop/"] = _post(
        "Stop recording the room", {**room, "RecordFile": s}, ["ConferenceName", "RecordFile"]
    )
    out[f"{p}ConferencePlay/"] = _post(
        "Play a file to members (all: into the room)",
        {
            **member,
            "FilePath": {**s, "description": "An http(s) URL or a file under the data directory."},
        },
        ["ConferenceName", "FilePath", "MemberID"],
    )
    out[f"{p}ConferenceSpeak/"] = _post(
        "Speak text to members (all: into the room)",
        {**member, "Text": s},
        ["ConferenceName", "Text", "MemberID"],
    )
    out[f"{p}ConferenceListMembers/"] = _post(
        "A room and its members", {**room, **filters}, ["ConferenceName"], listing
    )
    out[f"{p}ConferenceList/"] = _post("Every room and its members", filters, [], listing)
    return out


def openapi_document() -> dict[str, Any]:
    s = {"type": "string"}
    uuid = {"type": "string", "format": "uuid"}
    call_props: dict[str, Any] = {
        "From": {**s, "description": "Caller id."},
        "To": {
            **s,
            "description": "Dialled after the gateway string; only the part before the first ',' or '|'.",
        },
        "Gateways": {
            **s,
            "description": "Comma-separated gateway strings tried in order until one rings: "
            "sofia/gateway/<name>/ (a configured trunk), sofia/<profile>/ (To is a SIP address), "
            "sip:host[:port]/ (To@host:port); other kinds fail at once (CHAN_NOT_IMPLEMENTED).",
        },
        "AnswerUrl": {**_URL, "description": "RESTXML fetched (POST) on answer."},
        "HangupUrl": {
            **_URL,
            "description": "Notified once when the call ends; defaults to AnswerUrl.",
        },
        "RingUrl": {
            **_URL,
            "description": "Notified on the first 180/183 (CallStatus=ringing for both).",
        },
        "CallerName": s,
        "GatewayRetries": {
            **s,
            "description": f"Comma list: attempts per gateway (default {GATEWAY_RETRIES_DEFAULT}).",
        },
        "GatewayTimeouts": {
            **s,
            "description": f"Comma list: seconds per attempt (default {GATEWAY_TIMEOUT_DEFAULT:g}).",
        },
        "GatewayCodecs": {
            **s,
            "description": "Per gateway, quote-aware list: the SDP offer of that gateway's "
            "attempts (codecs the server lacks are dropped; none left: INCOMPATIBLE_DESTINATION).",
        },
        "ExtraDialString": {
            **s,
            "description": "k=v list: sip_h_<Name>=<v> becomes an INVITE header; "
            "origination_caller_id_name/number, originate_timeout honoured; others recorded.",
        },
        "SendDigits": {**s, "pattern": "^[0-9A-Da-d*#wW]+(@[0-9]+)?$"},
        "SendOnPreanswer": {**s, "enum": ["true", "false"]},
        "TimeLimit": {**s, "description": "Seconds after answer (integer > 0; ALLOTTED_TIMEOUT)."},
        "HangupOnRing": {
            **s,
            "description": "Seconds after the first 18x (integer >= 0; ORIGINATOR_CANCEL).",
        },
        "AccountSID": {**s, "description": "Echoed in every callback."},
        "CoreUUID": {
            **s,
            "description": "Eqivo: the core to run the call on; this server is one core (its id is "
            "the CoreUUID of its callbacks), another id gets 'Unknown Core UUID'.",
        },
        "MachineDetection": {
            **s,
            "enum": list(AMD_MODES),
            "description": "Eqivo's answering-machine detection; ignored with SendDigits. "
            "Callbacks then carry AnsweredBy and MachineDetectionDuration.",
        },
        "AsyncAMD": {
            **s,
            "enum": ["true", "false"],
            "description": "true (with AsyncAmdStatusCallback): the answer fetch does not wait; "
            "the decision is posted to the callback.",
        },
        "AsyncAmdStatusCallback": _URL,
        "AsyncAmdStatusCallbackMethod": {**s, "enum": ["GET", "POST"], "default": "POST"},
        **{
            name: {
                "type": "integer",
                "minimum": lo,
                "maximum": hi,
                "default": default,
                "description": "Seconds." if scale == 1000 else "Milliseconds.",
            }
            for name, (_, lo, hi, default, scale) in AMD_PARAMETERS.items()
        },
    }
    p = "/v0.1/"
    paths: dict[str, Any] = {
        f"{p}Call/": _post(
            "Originate a call (gateway failover)",
            call_props,
            ["From", "To", "Gateways", "AnswerUrl"],
            {"RequestUUID": s, "RestApiServer": s},
        ),
        f"{p}BulkCall/": _post(
            "Several calls: To, Gateways and per-call values split by Delimiter",
            {**call_props, "Delimiter": {**s, "description": "Not ',' or '/'."}},
            ["From", "To", "Gateways", "AnswerUrl", "Delimiter"],
            {"RequestUUID": {"type": "array", "items": s}},
        ),
        f"{p}GroupCall/": _post(
            "Ring every member at once; the first to answer (and press ConfirmKey) wins, the others get LOSE_RACE",
            {
                **call_props,
                "Delimiter": {
                    **s,
                    "description": "Splits To, Gateways and the per-member values; not ',' or '/'.",
                },
                "ConfirmSound": {
                    **s,
                    "description": "http(s) audio URLs (comma list) an answering member hears "
                    "before it may win.",
                },
                "ConfirmKey": {
                    **s,
                    "description": "DTMF digits an answering member must press to win, within "
                    f"{GROUP_CONFIRM_TIMEOUT_S:g} s (else it is dropped, NO_ANSWER).",
                },
                "RejectCauses": {
                    **s,
                    "description": "Comma list of causes that end a member's gateway failover "
                    f"(default {','.join(sorted(GROUP_REJECT_CAUSES_DEFAULT))}).",
                },
            },
            ["From", "To", "Gateways", "AnswerUrl", "Delimiter"],
            {"RequestUUID": s},
        ),
        f"{p}HangupCall/": _post(
            "Hang up by CallUUID or RequestUUID (a GroupCall's: every member)",
            {"CallUUID": uuid, "RequestUUID": uuid},
            [],
        ),
        f"{p}HangupAllCalls/": _post("Hang up every call of the account", {}, []),
        f"{p}TransferCall/": _post(
            "Run the RESTXML at Url", {"CallUUID": uuid, "Url": _URL}, ["CallUUID", "Url"]
        ),
        f"{p}ScheduleHangup/": _post(
            "Hang up in Time seconds",
            {"CallUUID": uuid, "Time": s},
            ["CallUUID", "Time"],
            {"SchedHangupId": s},
        ),
        f"{p}CancelScheduledHangup/": _post(
            "Cancel a scheduled hangup", {"SchedHangupId": s}, ["SchedHangupId"]
        ),
        f"{p}SendDigits/": _post(
            "Send DTMF",
            {
                "CallUUID": uuid,
                "Digits": s,
                "Leg": {**s, "enum": ["aleg", "bleg"], "default": "aleg"},
            },
            ["CallUUID", "Digits"],
        ),
        f"{p}Play/": _post(
            "Play audio URLs",
            {
                "CallUUID": uuid,
                "Sounds": s,
                "Delimiter": s,
                "Legs": {**s, "enum": ["aleg", "bleg", "both"]},
                "Length": s,
                "Loop": s,
                "Mix": s,
            },
            ["CallUUID", "Sounds"],
        ),
        f"{p}PlayStop/": _post("Stop Play", {"CallUUID": uuid}, ["CallUUID"]),
        f"{p}SchedulePlay/": _post(
            "Play in Time seconds",
            {
                "CallUUID": uuid,
                "Sounds": s,
                "Time": s,
                "Delimiter": s,
                "Legs": s,
                "Length": s,
                "Loop": s,
                "Mix": s,
            },
            ["CallUUID", "Sounds", "Time"],
            {"SchedPlayId": s},
        ),
        f"{p}CancelScheduledPlay/": _post(
            "Cancel a scheduled play", {"SchedPlayId": s}, ["SchedPlayId"]
        ),
        f"{p}RecordStart/": _post(
            "Record the call (files stay under the data directory)",
            {
                "CallUUID": uuid,
                "FileFormat": {**s, "enum": ["mp3", "wav"]},
                "FilePath": {
                    **s,
                    "description": "Not used (a directory on the framework's server).",
                },
                "FileName": _FILE_NAME,
                "TimeLimit": s,
            },
            ["CallUUID"],
            {"RecordFile": _URL},
        ),
        f"{p}RecordStop/": _post(
            "Stop a recording (RecordFile, or all)",
            {"CallUUID": uuid, "RecordFile": s},
            ["CallUUID", "RecordFile"],
        ),
        **_conference_paths(p),
        **{
            f"{p}{name}/": {
                m: _post(f"Not supported: answers Success false ({why})", {}, [])["post"]
                for m in ("get", "post")
            }
            for name, why in (
                ("ReloadConfig", "the configuration is read at start"),
                ("ReloadCacheConfig", "there is no cache server"),
            )
        },
        "/": {
            "get": {
                "summary": "The framework's index page (HTML)",
                "tags": ["v0.1"],
                "security": [],
                "responses": {"200": {"description": "text/html"}},
            }
        },
    }
    return {"info": {"title": "softswitch: legacy framework API", "version": "0.1"}, "paths": paths}
