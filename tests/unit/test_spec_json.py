"""softswitch.spec_json: call specs built by each dialect's parser come back from JSON equal,
with the same types; a payload naming any other class is refused."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from softswitch.api.callapi.request import parse_create
from softswitch.api.legacy.request import parse_call
from softswitch.api.plivo import parse_call_request
from softswitch.model import CallbackEvent, CallSpec
from softswitch.spec_json import SpecDecodeError, spec_from_json, spec_to_json


def roundtrip(spec: CallSpec) -> CallSpec:
    back = spec_from_json(spec_to_json(spec))
    assert back == spec
    assert type(back.sip_headers) is MappingProxyType and type(back.notify) is MappingProxyType
    return back


def test_a_plivo_spec_with_every_part() -> None:
    spec = parse_call_request(
        {
            "from": "1000",
            "to": "sip:bob@h<sip:carol@h",
            "caller_name": "Alice",
            "answer_url": "http://h/a",
            "answer_method": "GET",
            "hangup_url": "http://h/h",
            "ring_url": "http://h/r",
            "fallback_url": "http://h/f",
            "time_limit": 30,
            "ring_timeout": 15,
            "hangup_on_ring": 5,
            "send_digits": "12w3@300",
            "send_on_preanswer": True,
            "machine_detection": "true",
            "machine_detection_time": 4000,
            "machine_detection_url": "http://h/amd",
            "sip_headers": "X-A=1,X-B=two",
        }
    ).to_spec()
    back = roundtrip(spec)
    assert back.amd is not None and back.amd.params == spec.amd.params  # type: ignore[union-attr]
    assert back.digits is not None and back.digits.steps == spec.digits.steps  # type: ignore[union-attr]
    assert all(isinstance(k, CallbackEvent) for k in back.notify)


def test_legacy_and_callapi_specs() -> None:
    legacy = parse_call(
        {
            "From": "+1555",
            "To": "1000",
            "Gateways": "bogus/,sofia/gateway/gw/",
            "AnswerUrl": "http://h/a",
            "GatewayTimeouts": "7",
            "GatewayCodecs": "'PCMA,PCMU',PCMU",
            "SendDigits": "12w3",
            "ExtraDialString": "sip_h_X-Foo=bar,origination_caller_id_name='Bob, Jr'",
        },
        dialect="legacy",
        has_gateway=lambda name: name == "gw",
    )
    assert roundtrip(legacy).attempts == legacy.attempts
    callapi = parse_create(
        {
            "To": "+15551112222",
            "From": "+15553334444",
            "Url": "https://app.example.com/a",
            "StatusCallback": "https://app.example.com/s",
            "StatusCallbackEvent": ["initiated ringing"],
            "Timeout": "15",
            "MachineDetection": "Enable",
        }
    )
    roundtrip(callapi)


def test_only_call_model_types_are_built() -> None:
    text = json.dumps({"$dc": "subprocess:Popen", "f": {"args": ["true"]}})
    with pytest.raises(SpecDecodeError):
        spec_from_json(text)
    with pytest.raises(SpecDecodeError):
        spec_from_json(json.dumps({"$en": "os:environ", "v": 1}))
    with pytest.raises(SpecDecodeError):
        spec_from_json('{"$tu": [1, 2]}')  # not a CallSpec
    with pytest.raises(SpecDecodeError):
        spec_from_json("not json")
