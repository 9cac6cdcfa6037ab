"""``POST /v0.1/Call/`` → CallSpec: the framework's list syntaxes and gateway strings."""

from __future__ import annotations

import pytest

from sip import causes
from softswitch.api.legacy import (
    LegacyError,
    gateway_attempt,
    parse_call,
    parse_extra_dial_string,
    split_outside_quotes,
)
from softswitch.model import CallbackEvent, DialAttempt

BASE = {"From": "+1555", "To": "1000", "Gateways": "sofia/gateway/gw/", "AnswerUrl": "http://h/a"}


def parse(**over: str) -> object:
    return parse_call({**BASE, **over}, dialect="legacy", has_gateway=lambda name: name == "gw")


def test_split_outside_quotes() -> None:
    assert split_outside_quotes("'PCMA,PCMU',PCMU") == ["PCMA,PCMU", "PCMU"]
    assert split_outside_quotes("PCMA,PCMU") == ["PCMA", "PCMU"]
    assert split_outside_quotes("\"a,b\",'c'") == ["a,b", "c"]
    assert parse_extra_dial_string("sip_h_X-A=1,x='a,b',junk") == {"sip_h_X-A": "1", "x": "a,b"}


@pytest.mark.parametrize(
    ("gateway", "to", "expected"),
    [
        ("sofia/gateway/gw/", "1000", DialAttempt(gateway="gw", ring_timeout=5)),
        ("sofia/gateway/other/", "1000", DialAttempt(ring_timeout=5, fail_cause="INVALID_GATEWAY")),
        (
            "sip:127.0.0.1:5070/",
            "bob",
            DialAttempt(ring_timeout=5, target="sip:bob@127.0.0.1:5070"),
        ),
        (
            "sip:h;transport=tcp/",
            "bob",
            DialAttempt(ring_timeout=5, target="sip:bob@h;transport=tcp"),
        ),
        ("sofia/internal/", "bob@h:5080", DialAttempt(ring_timeout=5, target="sip:bob@h:5080")),
        (
            "sofia/internal/",
            "1000",
            DialAttempt(ring_timeout=5, fail_cause=causes.INVALID_NUMBER_FORMAT),
        ),
        ("user/", "bob", DialAttempt(ring_timeout=5, target="user/bob")),
        ("bogus/", "bob", DialAttempt(ring_timeout=5, fail_cause="CHAN_NOT_IMPLEMENTED")),
    ],
)
def test_gateway_strings(gateway: str, to: str, expected: DialAttempt) -> None:
    assert gateway_attempt(gateway, to, 5, lambda name: name == "gw") == expected


def test_messages_in_the_framework_order() -> None:
    for name in ("From", "To", "Gateways", "AnswerUrl"):
        with pytest.raises(LegacyError, match="^Mandatory Parameters Missing$"):
            parse(**{name: ""})
    with pytest.raises(LegacyError, match="^AnswerUrl is not Valid$"):
        parse(AnswerUrl="x", HangupUrl="y")
    with pytest.raises(LegacyError, match="^HangupUrl is not Valid$"):
        parse(HangupUrl="y", RingUrl="z")
    with pytest.raises(LegacyError, match="^RingUrl is not Valid$"):
        parse(RingUrl="z")


def test_spec() -> None:
    spec = parse(
        To="1000,2000|3000",
        Gateways="bogus/,sofia/gateway/gw/",
        GatewayRetries="2,x",
        GatewayTimeouts="7",
        ExtraDialString="sip_h_X-Foo=bar,origination_caller_id_name='Bob, Jr',originate_timeout=9,other=1",
        TimeLimit="-1",
        HangupOnRing="0",
        SendDigits="12w3",
        SendOnPreanswer="true",
        AccountSID="AC1",
        GatewayCodecs="'PCMA,PCMU',PCMU",
    )
    assert spec.destinations == ("1000",)
    assert spec.attempts == (
        DialAttempt(ring_timeout=7, fail_cause="CHAN_NOT_IMPLEMENTED"),
        DialAttempt(ring_timeout=7, fail_cause="CHAN_NOT_IMPLEMENTED"),
        # not an int item: default 1 try, originate_timeout; the second GatewayCodecs item
        DialAttempt(gateway="gw", ring_timeout=9, codecs=("PCMU",)),
    )
    assert dict(spec.sip_headers) == {"X-Foo": "bar"}
    assert spec.caller_name == "Bob, Jr" and spec.from_ == "+1555"
    assert spec.timers.time_limit is None and spec.timers.hangup_on_ring == 0
    assert spec.timers.hangup_on_ring_cause == causes.ORIGINATOR_CANCEL
    assert spec.digits is not None and spec.digits.on_preanswer
    assert spec.notify[CallbackEvent.HANGUP].url == "http://h/a"  # HangupUrl defaults to AnswerUrl
    assert CallbackEvent.RING not in spec.notify
    assert spec.record_params["gateway_codecs"] == ["PCMA,PCMU", "PCMU"]
    assert spec.record_params["account_sid"] == "AC1"
    assert spec.record_params["extra_dial_string"]["other"] == "1"


def test_gateway_codecs_restrict_each_attempt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="softswitch.api.legacy.request")
    gws = "sofia/gateway/gw/,sofia/gateway/gw/,sofia/gateway/gw/,sofia/gateway/gw/,bogus/"
    spec = parse(
        Gateways=gws, GatewayCodecs="'pcma,G729,PCMU@20i',PCMA,'G729',,G729", GatewayRetries="1,2"
    )
    assert [(a.codecs, a.fail_cause) for a in spec.attempts] == [
        (("PCMA", "PCMU"), None),  # G729 dropped, order kept, @options ignored
        (("PCMA",), None),
        (("PCMA",), None),  # each retry of a gateway keeps its codecs
        ((), causes.INCOMPATIBLE_DESTINATION),  # nothing the engine can do: no INVITE
        ((), None),  # no item: the engine's default offer
        ((), "CHAN_NOT_IMPLEMENTED"),  # a gateway that cannot be dialled keeps its own cause
    ]
    assert "codecs G729 dropped" in caplog.text


def test_absolute_codec_string_applies_to_attempts_without_their_own_item() -> None:
    spec = parse(
        Gateways="sofia/gateway/gw/,sofia/gateway/gw/",
        ExtraDialString="absolute_codec_string='PCMA,PCMU'",
        GatewayCodecs=",PCMU",
    )
    assert [a.codecs for a in spec.attempts] == [("PCMA", "PCMU"), ("PCMU",)]
    spec = parse(ExtraDialString="absolute_codec_string=G729")
    assert spec.attempts[0].fail_cause == causes.INCOMPATIBLE_DESTINATION


def test_zero_retries_skip_a_gateway() -> None:
    spec = parse(Gateways="sofia/gateway/gw/,bogus/", GatewayRetries="0,1")
    assert [a.fail_cause for a in spec.attempts] == ["CHAN_NOT_IMPLEMENTED"]


def test_bulk_call() -> None:
    from softswitch.api.legacy.request import parse_bulk_call

    def bulk(**over: str) -> list:
        return parse_bulk_call(
            {**BASE, "Delimiter": "<", **over}, dialect="legacy", has_gateway=lambda n: True
        )

    with pytest.raises(LegacyError, match="^This Delimiter is not allowed$"):
        bulk(Delimiter=",")
    with pytest.raises(LegacyError, match="^Mandatory Parameters Missing$"):
        bulk(Delimiter="")
    with pytest.raises(LegacyError, match="^BulkCalls should be used for at least 2 numbers$"):
        bulk()
    with pytest.raises(
        LegacyError, match="^'To' parameter length does not match 'Gateways' Length$"
    ):
        bulk(To="1<2")
    specs = bulk(
        To="1<2", Gateways="sofia/gateway/a/<sofia/gateway/b/", TimeLimit="5", CallerName="x<y"
    )
    assert [s.destinations for s in specs] == [("1",), ("2",)]
    assert [s.attempts[0].gateway for s in specs] == ["a", "b"]
    assert [s.timers.time_limit for s in specs] == [5, 5] and [s.caller_name for s in specs] == [
        "x",
        "y",
    ]


def test_interrupted_hangup_from_the_record() -> None:
    from softswitch.api.legacy import LegacyDialect

    record = {
        "call_uuid": "c",
        "request_uuid": "r",
        "to_number": "+44",
        "from_number": "+1",
        "params": {"hangup_url": "http://h/x?k=v", "from": "+1555", "account_sid": "AC"},
    }
    fields, url, method, params = LegacyDialect().interrupted_hangup(record)  # type: ignore[misc]
    assert (url, method) == ("http://h/x?k=v", "POST")
    assert (
        params["From"] == "1555"
        and params["To"] == "44"
        and params["k"] == "v"
        and params["AccountSID"] == "AC"
    )
    assert params["HangupCause"] == "SYSTEM_SHUTDOWN" and params["CallStatus"] == "completed"
    assert fields["hangup_cause_name"] == "SYSTEM_SHUTDOWN"
    assert LegacyDialect().interrupted_hangup({"params": {}}) is None


def test_group_call_members_and_fork_settings() -> None:
    from softswitch.api.legacy.request import GROUP_REJECT_CAUSES_DEFAULT, parse_group_call

    def group(**over: str) -> tuple:
        return parse_group_call(
            {**BASE, "Delimiter": "<", **over}, dialect="legacy", has_gateway=lambda n: True
        )

    with pytest.raises(LegacyError, match="^GroupCall should be used for at least 2 numbers$"):
        group()
    with pytest.raises(LegacyError, match="^ConfirmSound is not Valid$"):
        group(To="1<2", Gateways="a/<b/", ConfirmSound="file:///x.wav")
    specs, fork = group(
        To="1<2",
        Gateways="sofia/gateway/a/,bogus/<sofia/gateway/b/",
        CallerName="x",
        GatewayRetries="2",
        ExtraDialString="sip_h_X-A=1",
    )
    assert [s.destinations for s in specs] == [("1",), ("2",)]
    # GatewayRetries "2" is member 1's (its first gateway twice); member 2 has no item
    assert [[a.gateway for a in s.attempts] for s in specs] == [["a", "a", None], ["b"]]
    assert [s.caller_name for s in specs] == [
        "x",
        None,
    ]  # a missing item is empty, not the first one
    assert all(dict(s.sip_headers) == {"X-A": "1"} for s in specs)  # ExtraDialString is shared
    assert fork.reject_causes == GROUP_REJECT_CAUSES_DEFAULT and fork.confirm_key is None
    _, fork = group(
        To="1<2",
        Gateways="a/<b/",
        RejectCauses="user_busy, NO_ANSWER",
        ConfirmKey="12",
        ConfirmSound="http://h/a.wav,https://h/b.wav",
    )
    assert fork.reject_causes == {"USER_BUSY", "NO_ANSWER"} and fork.confirm_key == "12"
    assert fork.confirm_sounds == ("http://h/a.wav", "https://h/b.wav")


def test_eqivo_machine_detection_onto_amd_settings() -> None:
    """Eqivo's names and defaults onto the core's AmdSettings (units: ms; Timeout in s)."""
    from softswitch.api.legacy.dialect import answered_by
    from softswitch.model import AmdMode, CallSpec

    spec = parse(MachineDetection="Enable")
    assert isinstance(spec, CallSpec) and spec.amd is not None
    p = spec.amd.params
    assert spec.amd.mode is AmdMode.DETECT and spec.amd.webhook is None  # sync: the fetch waits
    assert (p.total_ms, p.greeting_ms, p.after_greeting_silence_ms, p.initial_silence_ms) == (
        30000,
        2400,
        1200,
        5000,
    )
    assert not spec.amd.waits_for_message_end
    assert spec.record_params["machine_detection"] == "Enable"

    spec = parse(
        MachineDetection="DetectMessageEnd",
        MachineDetectionTimeout="10",
        MachineDetectionSpeechEndThreshold="900",
        AsyncAMD="true",
        AsyncAmdStatusCallback="http://h/amd",
        AsyncAmdStatusCallbackMethod="GET",
    )
    assert isinstance(spec, CallSpec) and spec.amd is not None
    assert spec.amd.webhook is not None and (spec.amd.webhook.url, spec.amd.webhook.method) == (
        "http://h/amd",
        "GET",
    )
    assert spec.amd.params.total_ms == 10000 and spec.amd.params.message_end_silence_ms == 900
    assert spec.amd.waits_for_message_end and spec.amd.message_end_s == 10.0
    # a callback without AsyncAMD=true: nothing is posted, the fetch waits
    spec = parse(MachineDetection="Enable", AsyncAmdStatusCallback="http://h/amd")
    assert isinstance(spec, CallSpec) and spec.amd is not None and spec.amd.webhook is None
    # SendDigits wins (Eqivo, after Twilio); no MachineDetection: no detection
    spec = parse(MachineDetection="Enable", SendDigits="1")
    assert isinstance(spec, CallSpec) and spec.amd is None
    assert isinstance(parse(), CallSpec) and parse().amd is None  # type: ignore[attr-defined]
    with pytest.raises(
        LegacyError, match="MachineDetectionTimeout Parameter must be between 3 and 59"
    ):
        parse(MachineDetection="Enable", MachineDetectionTimeout="2")
    with pytest.raises(LegacyError, match="^Unknown Core UUID$"):
        parse_call({**BASE, "CoreUUID": "x"}, dialect="legacy", has_gateway=bool, core_uuid="y")

    class Result:
        def __init__(
            self, machine: bool, status: str, beep: float | None = None, end: str | None = None
        ):
            self.machine, self.status, self.beep_hz, self.message_end = machine, status, beep, end

    assert answered_by(Result(False, "NOTSURE"), "Enable") == "unknown"
    assert answered_by(Result(False, "HUMAN"), "Enable") == "human"
    assert answered_by(Result(True, "MACHINE"), "Enable") == "machine_start"
    assert answered_by(Result(True, "MACHINE", beep=1000.0), "Enable") == "machine_end_beep"
    assert (
        answered_by(Result(True, "MACHINE", end="SILENCE"), "DetectMessageEnd")
        == "machine_end_silence"
    )
    assert (
        answered_by(Result(True, "MACHINE", end="TIMEOUT"), "DetectMessageEnd")
        == "machine_end_other"
    )
