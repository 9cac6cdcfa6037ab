"""The CallAPI dialect's pure parts: request parsing into a CallSpec, statuses, status-callback
parameters and sequence numbers, X-Twilio-Signature against the twilio SDK's validator, the
TwiML vocabulary, list filters and the resource JSON."""

from __future__ import annotations

import uuid

import pytest
from twilio.request_validator import RequestValidator

from sip import causes
from softswitch.api.callapi import SIGNATURE, SIGNERS, CallApiDialect
from softswitch.api.callapi.codes import call_sid, call_uuid_of, final_status, rfc2822
from softswitch.api.callapi.filters import list_filters, sort_order
from softswitch.api.callapi.request import parse_create, parse_update
from softswitch.api.callapi.shapes import call_json
from softswitch.api.callapi.twiml import RESULT_PARAMS, parse_document
from softswitch.api.http import HttpError
from softswitch.app.document import CAUSE_NOT_IMPLEMENTED, XmlAppError
from softswitch.app.verbs import DTMF, MAX_LOOPS, GetDigits, Hangup, Play, Redirect, Speak, Wait
from softswitch.call import AccountLimits
from softswitch.calltable import Call
from softswitch.model import CallbackEvent, CallEnd, EndReason, HangupSource, HttpMethod
from softswitch.state import CallState, CallTransition
from softswitch.store import Filter

OK = {"To": "+15551112222", "From": "+15553334444", "Url": "https://app.example.com/a"}


def test_create_maps_onto_the_call_spec() -> None:
    spec = parse_create(
        {
            **OK,
            "Method": "get",
            "FallbackUrl": "https://app.example.com/f",
            "StatusCallback": "https://app.example.com/s",
            "StatusCallbackMethod": "GET",
            "StatusCallbackEvent": ["initiated ringing", "answered,completed"],
            "Timeout": "15",
            "CallerName": "Alice",
        }
    )
    assert spec.destinations == ("+15551112222",) and spec.from_ == "+15553334444"
    assert spec.answer.url == OK["Url"] and spec.answer.method is HttpMethod.GET
    assert spec.fallback is not None and spec.fallback.method is HttpMethod.POST
    assert set(spec.notify) == {
        CallbackEvent.INITIATED,
        CallbackEvent.RING,
        CallbackEvent.ANSWERED,
        CallbackEvent.HANGUP,
    }
    assert all(w.method is HttpMethod.GET for w in spec.notify.values())
    assert spec.timers.ring_timeout == 15 and spec.caller_name == "Alice"
    assert spec.dialect == "callapi"


def test_status_callback_without_events_is_completed_only_and_timeout_defaults() -> None:
    spec = parse_create({**OK, "StatusCallback": "https://app.example.com/s"})
    assert list(spec.notify) == [CallbackEvent.HANGUP]
    assert spec.timers.ring_timeout == 60
    assert dict(parse_create(OK).notify) == {}
    assert parse_create({**OK, "Timeout": "9999"}).timers.ring_timeout == 600


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"To": None}, "To"),
        ({"From": None}, "From"),
        ({"Url": None}, "Url"),
        ({"Url": "ftp://x/y"}, "Url"),
        ({"To": "not a number"}, "To"),
        ({"Method": "PUT"}, "Method"),
        ({"Timeout": "ten"}, "Timeout"),
        ({"Timeout": "0"}, "Timeout"),
        ({"StatusCallback": "https://a/s", "StatusCallbackEvent": "hungup"}, "StatusCallbackEvent"),
        ({"StatusCallbackEvent": "ringing"}, "StatusCallback"),
    ],
)
def test_bad_create_names_the_parameter(change: dict, named: str) -> None:
    data = {k: v for k, v in {**OK, **change}.items() if v is not None}
    with pytest.raises(HttpError) as exc:
        parse_create(data)
    assert exc.value.status == 400 and named in exc.value.error


def test_send_digits_on_answer_and_machine_detection_ignored() -> None:
    spec = parse_create({**OK, "SendDigits": "1w2#", "MachineDetection": "Enable"})
    assert spec.digits is not None and spec.digits.digits == "1w2#" and not spec.digits.on_preanswer
    assert len(spec.digits.steps) >= 4 and spec.amd is None
    for bad in ("12x", "1" * 33, "1@100"):
        with pytest.raises(HttpError, match="SendDigits"):
            parse_create({**OK, "SendDigits": bad})


def test_sip_auth_credentials_go_on_the_attempt_not_the_record() -> None:
    spec = parse_create({**OK, "SipAuthUsername": "alice", "SipAuthPassword": "secret"})
    (attempt,) = spec.attempts
    assert (attempt.username, attempt.password, attempt.gateway) == ("alice", "secret", None)
    assert "secret" not in repr(spec) and "secret" not in str(spec.record_params)
    (rc,) = parse_create({**OK, "Username": "bob", "Password": "pw"}).attempts
    assert (rc.username, rc.password) == ("bob", "pw")
    assert parse_create(OK).attempts == ()
    for bad in ({"SipAuthPassword": "x"}, {"SipAuthUsername": 'a"b'}):
        with pytest.raises(HttpError):
            parse_create({**OK, **bad})


def test_to_may_carry_x_headers_for_the_invite() -> None:
    spec = parse_create({**OK, "To": "sip:bob@example.com:5070?X-Acct=42&X-Tag=a%20b"})
    assert spec.destinations == ("sip:bob@example.com:5070",)
    assert dict(spec.sip_headers) == {"X-Acct": "42", "X-Tag": "a b"}
    assert dict(parse_create(OK).sip_headers) == {}
    for bad in (
        "sip:b@h?Via=x",
        "sip:b@h?",
        "sip:b@h?X-A=%0d%0aVia:x",
        "sip:b@h?" + "&".join(f"X-H{i}=1" for i in range(11)),
    ):
        with pytest.raises(HttpError, match="To"):
            parse_create({**OK, "To": bad})


def test_update_needs_url_or_a_known_status() -> None:
    assert parse_update({"Status": "completed"}).status == "completed"
    req = parse_update({"Url": "https://a/next", "Method": "GET"})
    assert req.url == "https://a/next" and req.method is HttpMethod.GET
    for bad in ({}, {"Status": "paused"}, {"Method": "GET"}, {"FallbackUrl": "ftp://a"}):
        with pytest.raises(HttpError) as exc:
            parse_update(bad)
        assert exc.value.status == 400
    req = parse_update(
        {
            "StatusCallback": "https://a/s",
            "StatusCallbackMethod": "GET",
            "FallbackUrl": "https://a/f",
        }
    )
    assert (req.url, req.status) == (None, None)
    assert req.status_callback is not None and req.status_callback.method is HttpMethod.GET
    assert req.fallback is not None and req.fallback.url == "https://a/f"
    assert req.fallback.method is HttpMethod.POST
    inline = parse_update({"Twiml": "<Response/>"}, twiml_url="http://me/t.xml")
    assert (inline.url, inline.method) == ("http://me/t.xml", HttpMethod.POST)
    with pytest.raises(HttpError, match="Twiml"):
        parse_update({"Twiml": "<Response/>", "Url": "https://a/x"}, twiml_url="http://me/t")


def test_sids_round_trip() -> None:
    uid = str(uuid.uuid4())
    sid = call_sid(uid)
    assert sid.startswith("CA") and len(sid) == 34 and sid[2:] == sid[2:].lower()
    assert call_uuid_of(sid) == uid
    assert call_uuid_of("CAxyz") is None and call_uuid_of("XX" + sid[2:]) is None


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (CallEnd(causes.NORMAL_CLEARING, HangupSource.CALLEE, answered=True), "completed"),
        (CallEnd(causes.USER_BUSY, HangupSource.CALLEE, sip_status=486), "busy"),
        (CallEnd(causes.NO_ANSWER, HangupSource.SYSTEM, EndReason.RING_TIMEOUT), "no-answer"),
        (CallEnd(causes.ORIGINATOR_CANCEL, HangupSource.API, EndReason.API), "canceled"),
        (CallEnd(causes.CALL_REJECTED, HangupSource.CALLEE, sip_status=603), "failed"),
        (CallEnd(causes.RECOVERY_ON_TIMER_EXPIRE, HangupSource.SYSTEM), "failed"),
    ],
)
def test_final_status(end: CallEnd, status: str) -> None:
    assert final_status(end).value == status
    assert CallApiDialect().status_name(CallState.COMPLETED, end) == status


def _call() -> Call:
    spec = parse_create(
        {
            **OK,
            "StatusCallback": "https://app.example.com/s",
            "StatusCallbackEvent": "initiated ringing answered completed",
        }
    )
    return Call(
        call_uuid=str(uuid.uuid4()),
        request_uuid=str(uuid.uuid4()),
        account=AccountLimits("AC1", "tok", cps=1, max_concurrent=1),
        spec=spec,
        to=spec.destinations[0],
        dialect=CallApiDialect(),
    )


def test_status_callbacks_count_from_zero_and_report_twilio_statuses() -> None:
    d = CallApiDialect()
    call = _call()
    fetch = d.callback_params(call, CallbackEvent.ANSWER)
    assert "SequenceNumber" not in fetch and fetch["CallStatus"] == "in-progress"
    assert fetch["CallSid"] == call_sid(call.call_uuid) and fetch["AccountSid"] == "AC1"
    assert fetch["Direction"] == "outbound-api" and fetch["ApiVersion"] == "2012-04-24"
    call.sm.fire(CallTransition.DIAL)
    got = [d.callback_params(call, CallbackEvent.INITIATED)]
    call.sm.fire(CallTransition.RING)
    got.append(d.callback_params(call, CallbackEvent.RING))
    call.sm.fire(CallTransition.ANSWER)
    got.append(d.callback_params(call, CallbackEvent.ANSWERED))
    call.duration = 7
    call.sm.end(CallEnd(causes.NORMAL_CLEARING, HangupSource.CALLEE, answered=True))
    got.append(d.callback_params(call, CallbackEvent.HANGUP))
    assert [p["CallStatus"] for p in got] == ["initiated", "ringing", "in-progress", "completed"]
    assert [p["SequenceNumber"] for p in got] == ["0", "1", "2", "3"]
    assert all(
        p["CallbackSource"] == "call-progress-events" and p["Timestamp"].endswith(" +0000")
        for p in got
    )
    assert got[3]["CallDuration"] == "7" and all("CallDuration" not in p for p in got[:3])


def test_fallback_request_carries_error_code_and_url() -> None:
    from softswitch.model import AppFailure

    d = CallApiDialect()
    call = _call()
    for kind, code in (
        ("http_status", "11200"),
        ("connection", "11205"),
        ("content_type", "12300"),
        ("document", "12100"),
    ):
        call.app_failure = AppFailure(kind, "https://app/answer", "x")
        got = d.callback_params(call, CallbackEvent.ANSWER)
        assert (got["ErrorCode"], got["ErrorUrl"]) == (code, "https://app/answer")
        assert "ErrorCode" not in d.callback_params(call, CallbackEvent.APPLICATION)
    call.app_failure = None
    assert "ErrorCode" not in d.callback_params(call, CallbackEvent.ANSWER)


def test_signature_is_accepted_by_the_twilio_validator() -> None:
    sign = SIGNERS[SIGNATURE]
    url = "https://app.example.com/status?x=1"
    params = {"CallSid": "CA" + "0" * 32, "CallStatus": "ringing", "SequenceNumber": "1"}
    headers = sign("POST", url, params, "tok")
    assert RequestValidator("tok").validate(url, params, headers["X-Twilio-Signature"])
    get_headers = sign("GET", url, {}, "tok")
    assert RequestValidator("tok").validate(url, {}, get_headers["X-Twilio-Signature"])
    assert not RequestValidator("other").validate(url, params, headers["X-Twilio-Signature"])


def test_twiml_verbs() -> None:
    doc = parse_document(
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Say voice="man" language="en-GB" loop="2">Hello <break time="1s"/> world</Say>'
        '<Play loop="3">https://a/x.wav</Play><Play digits="12w#"/><Pause length="4"/>'
        '<Gather action="https://a/g" method="GET" timeout="7" numDigits="4" finishOnKey="*">'
        "<Say>Press</Say><Pause/></Gather>"
        '<Redirect method="GET">https://a/r</Redirect><Reject reason="busy"/><Hangup/></Response>'
    )
    assert doc.result_params is RESULT_PARAMS and RESULT_PARAMS.digits == "Digits"
    say, play, digits, pause, gather, redirect, reject, hangup = doc.verbs
    assert say == Speak(text="Hello world", voice="MAN", language="en-GB", loop=2)
    assert play == Play(url="https://a/x.wav", loop=3)
    assert digits == DTMF(digits="12w#", async_=False)
    assert pause == Wait(length=4)
    assert isinstance(gather, GetDigits)
    assert (
        gather.action,
        gather.method,
        gather.timeout,
        gather.num_digits,
        gather.finish_on_key,
    ) == ("https://a/g", "GET", 7, 4, "*")
    assert gather.children == (Speak(text="Press"), Wait(length=1))
    assert redirect == Redirect(url="https://a/r", method="GET")
    assert reject == Hangup(reason="busy") and hangup == Hangup()


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ("<Response><Speak>x</Speak></Response>", "<Speak>"),
        ("<Response><Say bogus='1'>x</Say></Response>", "'bogus'"),
        ("<Response><Pause length='x'/></Response>", "'length'"),
        ("<Response><Gather><Hangup/></Gather></Response>", "<Hangup>"),
        ("<Response><Gather input='speech'/></Response>", "'input'"),
        ("<Response><Reject reason='nope'/></Response>", "'reason'"),
        ("<Other/>", "<Other>"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><Response/>', "DTD"),
    ],
)
def test_twiml_errors_name_the_place(doc: str, where: str) -> None:
    with pytest.raises(XmlAppError) as exc:
        parse_document(doc)
    assert where in str(exc.value)


def test_twiml_unsupported_verbs_are_not_implemented() -> None:
    with pytest.raises(XmlAppError) as exc:
        parse_document("<Response><Enqueue>q</Enqueue></Response>")
    assert exc.value.cause == CAUSE_NOT_IMPLEMENTED


def test_list_filters() -> None:
    got = list_filters(
        {
            "To": "+1555",
            "Status": "no-answer",
            "StartTime>": "2026-12-01",
            "Page": "1",
            "PageSize": "10",
        }
    )
    assert Filter("dialect", "=", "callapi") in got
    assert (
        Filter("to_number", "=", "+1555") in got and Filter("call_status", "=", "no-answer") in got
    )
    assert Filter("initiation_time", ">=", "2026-12-01 00:00:00+00:00") in got
    for bad in (
        {"Status": "live"},
        {"StartTime": "yesterday"},
        {"Foo": "1"},
        {"ParentCallSid": "x"},
    ):
        with pytest.raises(ValueError):
            list_filters(bad)


def test_sort_by() -> None:
    assert sort_order("DateCreated:asc") == [("initiation_time", False)]
    assert sort_order("Duration:desc") == [("call_duration", True)]
    assert sort_order("To") == [("to_number", False)] and sort_order(None) == []
    assert sort_order("Price:desc") == []  # never set: the default order stays
    assert Filter("dialect", "=", "callapi") in list_filters({"SortBy": "From:desc"})
    for bad in ("Color:asc", "From:up", "from"):
        with pytest.raises(ValueError, match="SortBy"):
            sort_order(bad)


def test_resource_json() -> None:
    uid = str(uuid.uuid4())
    rec = {
        "call_uuid": uid,
        "parent_call_uuid": None,
        "initiation_time": "2026-12-02 05:20:02+00:00",
        "answer_time": "2026-12-02 05:20:05+00:00",
        "end_time": "2026-12-02 05:20:15+00:00",
        "to_number": "+1555",
        "from_number": "+1666",
        "caller_name": None,
        "call_status": "completed",
        "call_duration": 10,
        "params": {},
        "extra": {},
    }
    body = call_json(rec, account_sid="AC1", base="/2010-04-01/Accounts/AC1")
    assert body["sid"] == call_sid(uid) and body["duration"] == 10
    assert body["date_created"] == "Wed, 02 Dec 2026 05:20:02 +0000"
    assert body["start_time"] == "Wed, 02 Dec 2026 05:20:05 +0000"
    assert body["uri"] == f"/2010-04-01/Accounts/AC1/Calls/{call_sid(uid)}.json"
    assert body["direction"] == "outbound-api"  # a record from before the column: the API's
    rec["direction"] = "inbound"  # a caller's INVITE routed by [[inbound]]
    assert call_json(rec, account_sid="AC1", base="")["direction"] == "inbound"
    rec["direction"] = "outbound"
    assert call_json(rec, account_sid="AC1", base="")["direction"] == "outbound-api"
    assert rfc2822(0) == "Thu, 01 Jan 1970 00:00:00 +0000"


def test_get_callback_is_signed_as_sent() -> None:
    """GET parameters go in the query; the signature covers the URL the HTTP client sends
    (yarl leaves ':' and '@' unescaped in a query), so the SDK's validator accepts it."""
    import yarl

    from softswitch.signing import register_signer
    from softswitch.webhook_http import prepare_request

    for name, signer in SIGNERS.items():
        register_signer(name, signer)
    req = prepare_request(
        "https://app.example.com/fb?a=1",
        "GET",
        {"To": "sip:bob@127.0.0.1:5060", "From": "+1555", "Timestamp": "Wed, 02 Dec"},
        auth_token="tok",
        signature=SIGNATURE,
        user_agent="t",
    )
    sent = str(yarl.URL(req.url))
    assert sent == req.url
    assert RequestValidator("tok").validate(sent, {}, req.headers["X-Twilio-Signature"])


def test_twiml_dial_and_record() -> None:
    from softswitch.app.verbs import Dial, Number, Record, User

    dial, record = parse_document(
        '<Response><Dial action="https://a/d" timeout="12" timeLimit="60" callerId="+1555" '
        'hangupOnStar="true">+15550001<Number sendDigits="1w2">+15550002</Number>'
        "<Sip>sip:bob@127.0.0.1:5070</Sip></Dial>"
        '<Record action="https://a/r" maxLength="20" finishOnKey="#" playBeep="false" timeout="3"/>'
        "</Response>"
    ).verbs
    assert isinstance(dial, Dial)
    assert dial.numbers == (
        Number("+15550001"),
        Number("+15550002", send_digits="1w2"),
        User("sip:bob@127.0.0.1:5070"),
    )
    assert (dial.action, dial.timeout, dial.time_limit, dial.caller_id, dial.hangup_on_star) == (
        "https://a/d",
        12,
        60,
        "+1555",
        True,
    )
    assert isinstance(record, Record)
    assert (
        record.action,
        record.max_length,
        record.finish_on_key,
        record.play_beep,
        record.timeout,
    ) == ("https://a/r", 20, "#", False, 3)
    for bad in (
        "<Response><Dial/></Response>",
        "<Response><Number>1</Number></Response>",
        "<Response><Dial><Sip password='p'>sip:a@b</Sip></Dial></Response>",
        "<Response><Dial><Sip username='a\"b'>sip:a@b</Sip></Dial></Response>",
        "<Response><Redirect>javascript:alert(1)</Redirect></Response>",
        "<Response><Play>ftp://a/x.wav</Play></Response>",
        "<Response><Gather action='a b'/></Response>",
    ):
        with pytest.raises(XmlAppError):
            parse_document(bad)


def test_twiml_sip_credentials_transcribe_loops_and_relative_urls() -> None:
    from softswitch.app.verbs import Dial, Record, User

    doc = parse_document(
        "<Response><Dial><Sip username='alice' password='secret'>sip:a@b</Sip></Dial>"
        "<Record transcribe='true' transcribeCallback='/t' action='rec'/>"
        "<Say loop='0'>again</Say><Play loop='0'>/a.wav</Play>"
        "<Gather numDigits='1'/><Redirect>../next</Redirect></Response>"
    )
    dial, record, say, play, gather, redirect = doc.verbs
    assert isinstance(dial, Dial) and dial.numbers == (
        User("sip:a@b", username="alice", password="secret"),
    )
    assert isinstance(record, Record) and record.action == "rec"
    assert isinstance(say, Speak) and say.loop == MAX_LOOPS
    assert play == Play(url="/a.wav", loop=MAX_LOOPS)
    assert isinstance(gather, GetDigits) and gather.action == ""  # the document's own URL
    assert redirect == Redirect(url="../next", method="POST")
    assert doc.relative_urls
    assert doc.result_params.dial_status == "DialCallStatus"


def test_twiml_record_without_action_goes_to_the_document() -> None:
    from softswitch.app.verbs import Record

    (record,) = parse_document("<Response><Record maxLength='5'/></Response>").verbs
    assert isinstance(record, Record) and record.action == "" and record.redirect
    assert record.method == "POST"


def test_voicemail_and_machine_detection_parameters() -> None:
    from softswitch.api.callapi.dialect import answered_by, machine_params
    from softswitch.model import AmdMode

    spec = parse_create(
        {
            **OK,
            "DetectVoicemail": "true",
            "MachineDetection": "DetectMessageEnd",
            "MachineDetectionTimeout": "8",
            "MachineDetectionSpeechThreshold": "2400",
        }
    )
    assert spec.amd is not None and spec.amd.mode is AmdMode.DETECT and spec.amd.webhook is None
    assert spec.amd.params.total_ms == 8000 and spec.amd.params.greeting_ms == 2400
    asyn = parse_create(
        {
            **OK,
            "MachineDetection": "Enable",
            "AsyncAmd": "true",
            "AsyncAmdStatusCallback": "https://a/amd",
        }
    )
    assert (
        asyn.amd is not None
        and asyn.amd.webhook is not None
        and asyn.amd.webhook.url == "https://a/amd"
    )
    assert parse_create(OK).amd is None
    for bad in (
        {"MachineDetection": "Yes"},
        {"DetectVoicemail": "maybe"},
        {"MachineDetection": "Enable", "MachineDetectionTimeout": "99"},
        {"MachineDetection": "Enable", "AsyncAmd": "true"},
    ):
        with pytest.raises(HttpError):
            parse_create({**OK, **bad})

    class R:
        def __init__(self, machine: bool, status: str, beep: float | None = None) -> None:
            self.machine, self.status, self.beep_hz, self.decided_at_ms = (
                machine,
                status,
                beep,
                1234,
            )

    assert answered_by(R(False, "HUMAN")) == "human"
    assert answered_by(R(True, "MACHINE")) == "machine_start"
    assert answered_by(R(True, "MACHINE", 1000.0)) == "machine_end_beep"
    assert answered_by(R(False, "NOTSURE")) == "unknown"
    assert machine_params({"MachineDetection": "Enable"}, R(True, "MACHINE")) == {
        "AnsweredBy": "machine_start",
        "MachineDetectionDuration": "1234",
    }
    # DetectMessageEnd: the end of the greeting, found within MachineDetectionTimeout.
    assert spec.amd.params.message_end_silence_ms == 1200
    assert spec.amd.params.beep_wait_ms == 8000 and spec.amd.waits_for_message_end
    ended = parse_create(
        {**OK, "MachineDetection": "DetectMessageEnd", "MachineDetectionSpeechEndThreshold": "900"}
    )
    assert ended.amd is not None and ended.amd.params.message_end_silence_ms == 900
    assert ended.amd.params.beep_wait_ms == 30_000
    assert asyn.amd is not None and not asyn.amd.waits_for_message_end
    for how, word in (
        ("BEEP", "beep"),
        ("SILENCE", "silence"),
        ("TIMEOUT", "other"),
        (None, "other"),
    ):
        r = R(True, "MACHINE")
        r.message_end, r.message_end_ms = how, 5678  # type: ignore[attr-defined]
        assert answered_by(r, "DetectMessageEnd") == f"machine_end_{word}"
        assert machine_params(spec.record_params, r) == {
            "VoicemailDetector": "voicemail",
            "AnsweredBy": f"machine_end_{word}",
            "MachineDetectionDuration": "5678",
        }
    assert answered_by(R(False, "HUMAN"), "DetectMessageEnd") == "human"


def test_a_call_a_crash_ended_still_gets_its_completed_event() -> None:
    uid = str(uuid.uuid4())
    rec = {
        "call_uuid": uid,
        "account_id": "AC1",
        "to_number": "+1555",
        "answer_time": None,
        "call_status": "failed",
        "call_duration": 0,
        "params": {
            "From": "+1666",
            "StatusCallback": "https://a/s",
            "StatusCallbackMethod": "GET",
            "StatusCallbackEvent": ["ringing", "completed"],
        },
    }
    built = CallApiDialect().interrupted_hangup(rec)
    assert built is not None
    fields, url, method, params = built
    assert (url, method) == ("https://a/s", "GET")
    assert params["CallSid"] == call_sid(uid) and params["CallStatus"] == "failed"
    assert params["CallbackSource"] == "call-progress-events" and params["CallDuration"] == "0"
    assert params["Direction"] == "outbound-api"
    built = CallApiDialect().interrupted_hangup({**rec, "direction": "inbound"})
    assert built is not None and built[3]["Direction"] == "inbound"
    rec["params"] = {**rec["params"], "StatusCallbackEvent": ["ringing"]}
    assert CallApiDialect().interrupted_hangup(rec) is None


def test_twiml_dial_conference() -> None:
    from softswitch.api.callapi.twiml import conference_params
    from softswitch.app.verbs import Conference, ConferenceEvent

    (c,) = parse_document(
        '<Response><Dial action="/after" hangupOnStar="true"><Conference muted="true"'
        ' beep="onEnter" startConferenceOnEnter="false" endConferenceOnExit="true"'
        ' waitUrl="/music.wav" maxParticipants="10" record="record-from-start"'
        ' statusCallback="/s" statusCallbackEvent="join leave speaker hold">room</Conference>'
        "</Dial></Response>"
    ).verbs
    assert isinstance(c, Conference)
    assert (c.name, c.muted, c.enter_sound, c.exit_sound) == ("room", True, "beep:1", "")
    assert not c.start_on_enter and c.end_on_exit and c.hangup_on_star
    assert (c.wait_sound, c.max_members, c.record, c.action) == ("/music.wav", 10, True, "/after")
    assert c.status_events == {"enter", "exit", "speaking", "stopped-speaking", "hold", "unhold"}
    (d,) = parse_document("<Response><Dial><Conference>r</Conference></Dial></Response>").verbs
    assert d.enter_sound == d.exit_sound == "beep:1" and d.status_events == {"start", "end"}
    for bad in (
        '<Dial><Conference maxParticipants="1">r</Conference></Dial>',
        '<Dial><Conference beep="loud">r</Conference></Dial>',
        '<Dial><Conference statusCallbackEvent="nope">r</Conference></Dial>',
        "<Dial>+14155550100<Conference>r</Conference></Dial>",
        "<Dial><Number>+14155550100</Number><Conference>r</Conference></Dial>",
    ):
        with pytest.raises(XmlAppError):
            parse_document(f"<Response>{bad}</Response>")
    ev = ConferenceEvent("enter", "r", "7f000000-0000-0000-0000-000000000001", "1", "c", muted=True)
    assert conference_params(ev) == {
        "ConferenceSid": "CF7f000000000000000000000000000001",
        "FriendlyName": "r",
        "StatusCallbackEvent": "participant-join",
        "Muted": "true",
        "Hold": "false",
    }
    assert conference_params(ConferenceEvent("floor", "r", "u", "1", "c")) is None
    # the Dial's timeLimit caps the participant; coach (a CallSid); trim; the action's words
    sid = "CA" + "ab" * 16
    (e,) = parse_document(
        f'<Response><Dial timeLimit="30"><Conference coach="{sid}" trim="do-not-trim"'
        ' record="record-from-start">r</Conference></Dial></Response>'
    ).verbs
    assert e.member_time_limit == 30 and e.time_limit == 0
    assert e.coach == "abababab-abab-abab-abab-abababababab" and not e.record_trim
    assert d.member_time_limit == 14_400 and d.record_trim and d.coach is None
    for bad in ('coach="CA12"', 'trim="yes"'):
        with pytest.raises(XmlAppError):
            parse_document(f"<Response><Dial><Conference {bad}>r</Conference></Dial></Response>")
    done = ConferenceEvent("result", "r", "u", "1", "c", reason="hangup", duration_s=12)
    assert conference_params(done) == {
        "ConferenceSid": "CFu",
        "FriendlyName": "r",
        "DialCallStatus": "completed",
        "DialCallDuration": "12",
    }
    full = ConferenceEvent("result", "r", "u", "", "c", reason="full")
    assert conference_params(full)["DialCallStatus"] == "failed"
