"""``POST /v0.1/GroupCall/`` (the parallel fork, ``softswitch.fork``) against real sipp
callees and a real webhook receiver: the first answer wins and the others are cancelled;
``ConfirmKey`` pressed over RFC 2833 wins; a member that does not confirm is dropped."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from softswitch.api.legacy import routes as legacy_routes
from tests import test_api_legacy as base
from tests.conftest import needs_sipp
from tests.peers.plivo_api import sipp_done, sipp_messages
from tests.peers.webhooks import WebhookReceiver
from tests.test_api_legacy import assert_signed, gw, is_hangup, tone_wav
from tests.test_media_peers import needs_pcaps, pcap_scenario

# The legacy tests' fixtures: a started server (``legacy``) and the webhook receiver.
legacy = base.legacy
receiver = base.receiver


def group_form(receiver: WebhookReceiver, peers: list[Any], **extra: str) -> dict[str, str]:
    return {
        "From": "+15550001",
        "To": "<".join(f"m{i}" for i in range(len(peers))),
        "Delimiter": "<",
        "Gateways": "<".join(gw(p) for p in peers),
        "AnswerUrl": receiver.url("/short"),
        "RingUrl": receiver.url("/ring"),
        "HangupUrl": receiver.url("/hangup"),
        **extra,
    }


async def test_group_call_validation_messages(legacy: Any, receiver: WebhookReceiver) -> None:
    api = await legacy()
    base = {
        "From": "1",
        "To": "a<b",
        "Gateways": "bogus/<bogus/",
        "AnswerUrl": receiver.url("/a"),
        "Delimiter": "<",
    }
    cases = [
        ({**base, "Delimiter": ","}, "This Delimiter is not allowed"),
        ({k: v for k, v in base.items() if k != "Delimiter"}, "Mandatory Parameters Missing"),
        ({k: v for k, v in base.items() if k != "To"}, "Mandatory Parameters Missing"),
        ({**base, "AnswerUrl": "ftp://x/"}, "AnswerUrl is not Valid"),
        ({**base, "RingUrl": "nope"}, "RingUrl is not Valid"),
        ({**base, "ConfirmSound": "/etc/passwd"}, "ConfirmSound is not Valid"),
        ({**base, "To": "a"}, "GroupCall should be used for at least 2 numbers"),
        ({**base, "To": "a<b<c"}, "'To' parameter length does not match 'Gateways' Length"),
    ]
    for form, message in cases:
        assert await api.post("GroupCall", **form) == (
            200,
            {"Success": False, "Message": message},
        ), message
    # Every member fails at once: one hangup callback per member, all with the group's RequestUUID.
    status, body = await api.post("GroupCall", **base)
    assert (status, body["Success"], body["Message"]) == (200, True, "GroupCall Request Executed")
    assert uuid.UUID(body["RequestUUID"]).version == 4
    hangups = await receiver.wait_for(is_hangup, count=2)
    assert {h.form["RequestUUID"] for h in hangups} == {body["RequestUUID"]}
    assert sorted(h.form["To"] for h in hangups) == ["a", "b"]
    assert {h.form["HangupCause"] for h in hangups} == {"CHAN_NOT_IMPLEMENTED"}


@needs_sipp
async def test_first_answer_wins_and_the_ringing_member_is_cancelled(
    sipp: Any, legacy: Any, receiver: WebhookReceiver
) -> None:
    busy, ringing, answering = (
        sipp("uas_busy.xml"),
        sipp("uas_ring_cancel.xml"),
        sipp("uas_answer_delayed.xml"),
    )
    api = await legacy()
    _, body = await api.post("GroupCall", **group_form(receiver, [busy, ringing, answering]))
    assert body["Success"] is True
    request_uuid = body["RequestUUID"]
    hangups = await receiver.wait_for(path="/hangup", count=3, timeout=20)
    by_to = {h.form["To"]: h.form for h in hangups}
    assert by_to["m0"]["HangupCause"] == "USER_BUSY"
    assert by_to["m1"]["HangupCause"] == "LOSE_RACE"
    assert by_to["m2"]["HangupCause"] == "NORMAL_CLEARING"  # the winner's document ended
    assert {h["RequestUUID"] for h in by_to.values()} == {request_uuid}
    (fetch,) = [r for r in receiver.of("/short") if not is_hangup(r)]
    assert (
        fetch.form["CallUUID"] == by_to["m2"]["CallUUID"]
        and fetch.form["ALegRequestUUID"] == request_uuid
    )
    rings = receiver.of("/ring")
    assert sorted(r.form["To"] for r in rings) == ["m1", "m2"]  # the busy one never rang
    await sipp_done(busy, ringing, answering)  # the ringing one got its CANCEL
    assert "CANCEL sip:m1@" in sipp_messages(ringing)
    assert_signed(receiver)
    records = api.server.store.calls_by_request(base.AUTH_ID, request_uuid)
    assert len(records) == 3


@needs_sipp
@needs_pcaps
async def test_confirm_key_pressed_over_rfc2833_wins(
    sipp: Any, legacy: Any, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Both members answer; the one that sends the key ('5' from sipp's capture) wins, the
    other (which heard the prompt but pressed nothing) gets BYE with LOSE_RACE."""
    receiver.routes["/tone.wav"] = (200, tone_wav(1.0), "audio/wav")
    silent = sipp("uas_answer.xml")
    presser = sipp(pcap_scenario(tmp_path, ["5"]), rtp_echo=False)
    api = await legacy()
    form = group_form(
        receiver, [silent, presser], ConfirmSound=receiver.url("/tone.wav"), ConfirmKey="5"
    )
    _, body = await api.post("GroupCall", **form)
    assert body["Success"] is True
    hangups = await receiver.wait_for(path="/hangup", count=2, timeout=20)
    by_to = {h.form["To"]: h.form for h in hangups}
    assert by_to["m0"]["HangupCause"] == "LOSE_RACE"
    assert by_to["m1"]["HangupCause"] == "NORMAL_CLEARING"
    (fetch,) = [r for r in receiver.of("/short") if not is_hangup(r)]
    assert fetch.form["CallUUID"] == by_to["m1"]["CallUUID"]
    assert receiver.of("/tone.wav")  # the prompt was fetched to be played
    await sipp_done(silent, presser)
    assert "BYE sip:" in sipp_messages(silent)


@needs_sipp
async def test_member_that_does_not_confirm_is_dropped_and_hangup_by_request_ends_the_group(
    sipp: Any, legacy: Any, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(legacy_routes, "GROUP_CONFIRM_TIMEOUT_S", 1.5)
    silent, ringing = sipp("uas_answer.xml"), sipp("uas_ring_cancel.xml")
    api = await legacy()
    _, body = await api.post("GroupCall", **group_form(receiver, [silent, ringing], ConfirmKey="1"))
    (dropped,) = await receiver.wait_for(path="/hangup", timeout=15)
    assert dropped.form["To"] == "m0" and dropped.form["HangupCause"] == "NO_ANSWER"
    assert not [r for r in receiver.of("/short") if not is_hangup(r)]  # nobody won
    status, resp = await api.post("HangupCall", RequestUUID=body["RequestUUID"])
    assert (status, resp) == (200, {"Success": True, "Message": "Hangup Call Executed"})
    hangups = await receiver.wait_for(path="/hangup", count=2, timeout=10)
    assert {h.form["To"]: h.form["HangupCause"] for h in hangups} == {
        "m0": "NO_ANSWER",
        "m1": "ORIGINATOR_CANCEL",
    }
    await sipp_done(silent, ringing)
