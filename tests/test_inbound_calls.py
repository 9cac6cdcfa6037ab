"""Inbound calls (``[[inbound]]`` routes) from real callers: sipp as the caller (a UAC
scenario with an SDP offer, RTP echoed), a real in-process :class:`Server`, the customer's
web server (:class:`~tests.peers.webhooks.WebhookReceiver`, checking Plivo's V3 signature)
and, for ``<Dial>``, a baresip callee: softswitch bridges the inbound A leg to it (B2BUA).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.config import InboundRoute
from softswitch.server import Server
from tests.conftest import needs_sipp
from tests.peers.baresip import needs_baresip
from tests.peers.plivo_api import AUTH_ID, AUTH_TOKEN, make_config, sipp_done, sipp_messages
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_sipp]


@pytest.fixture
async def web(webhook_receiver: Any) -> WebhookReceiver:
    return await webhook_receiver(auth_token=AUTH_TOKEN)


@pytest.fixture
async def server(tmp_path: Path, web: WebhookReceiver) -> AsyncIterator[Server]:
    """A server routing 5000 (exact) and 6xxx (prefix) to the receiver's documents."""
    routes = [
        InboundRoute(
            number="5000", answer_url=web.url("/answer5000"), hangup_url=web.url("/hangup")
        ),
        InboundRoute(
            prefix="6",
            answer_url=web.url("/answer6"),
            hangup_url=web.url("/hangup"),
            account=AUTH_ID,
        ),
    ]
    cfg = make_config(tmp_path, inbound=routes)
    srv = Server(cfg)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop("hangup", 2.0)


def caller(sipp: Any, server: Server, scenario: str, number: str, **kw: Any) -> Any:
    """A sipp UAC calling ``number`` at the server."""
    extra = ["-s", number, *kw.pop("extra", []), f"127.0.0.1:{server.ua.local_port}"]
    return sipp(scenario, extra=extra, **kw)


async def test_inbound_call_speaks_then_hangs_up(
    sipp: Any, server: Server, web: WebhookReceiver
) -> None:
    web.xml(
        "/answer5000",
        '<?xml version="1.0"?><Response><Speak>Hello caller</Speak><Hangup/></Response>',
    )
    peer = caller(sipp, server, "uac_inbound.xml", "5000")
    answer = (await web.wait_for(lambda r: r.path == "/answer5000", timeout=10))[0].params
    assert (answer["Direction"], answer["To"], answer["From"], answer["CallStatus"]) == (
        "inbound",
        "5000",
        "4155550100",
        "in-progress",
    )
    assert answer["CallerName"] == "Alice"
    hangup = (await web.wait_for(lambda r: r.path == "/hangup", timeout=15))[0].params
    assert hangup["Direction"] == "inbound" and hangup["CallUUID"] == answer["CallUUID"]
    assert (hangup["CallStatus"], hangup["HangupCause"]) == ("completed", "NORMAL_CLEARING")
    await sipp_done(peer)  # 200 with a PCMU answer, then our BYE
    assert "Reason: Q.850;cause=16" in sipp_messages(peer)
    assert not web.bad_signatures
    record = server.store.get_call(AUTH_ID, answer["CallUUID"])
    assert record is not None
    assert (record["direction"], record["to_number"], record["from_number"]) == (
        "inbound",
        "5000",
        "4155550100",
    )
    assert record["answer_time"] and record["end_time"]


async def test_unknown_number_gets_404(sipp: Any, server: Server, web: WebhookReceiver) -> None:
    peer = caller(sipp, server, "uac_inbound_404.xml", "7777")
    await sipp_done(peer)
    assert server.inbound.refused == {404: 1}
    assert web.of("/answer5000") == [] and web.of("/hangup") == []


async def test_invite_from_outside_the_allow_list_gets_403(
    sipp: Any, tmp_path: Path, web: WebhookReceiver
) -> None:
    cfg = make_config(
        tmp_path,
        inbound=[InboundRoute(number="5000", answer_url=web.url("/a"))],
        sip_allowed_peers=["192.0.2.0/24"],
    )
    srv = Server(cfg)
    await srv.start()
    try:
        peer = caller(sipp, srv, "uac_inbound_403.xml", "5000")
        await sipp_done(peer)
        assert srv.ua.stats["dropped_not_allowed"] >= 1
        assert web.of("/a") == []
    finally:
        await srv.stop("hangup", 2.0)


@needs_baresip
async def test_inbound_call_dials_out_and_the_caller_hangs_up(
    sipp: Any, baresip: Any, server: Server, web: WebhookReceiver
) -> None:
    callee = baresip()
    web.xml(
        "/answer6",
        f'<?xml version="1.0"?><Response><Dial callbackUrl="{web.url("/dialcb")}">'
        f"<User>{callee.uri}</User></Dial></Response>",
    )
    # The caller hangs up 4 s after its ACK: the B leg is up by then (checked below).
    peer = caller(sipp, server, "uac_inbound_bye.xml", "6123", extra=["-d", "4000"])
    answer = (await web.wait_for(lambda r: r.path == "/answer6", timeout=10))[0].params
    assert answer["Direction"] == "inbound" and answer["To"] == "6123"
    bridged = await web.wait_for(
        lambda r: r.path == "/dialcb" and r.params.get("DialAction") == "answer", timeout=10
    )
    assert bridged[0].params["DialBLegTo"] == callee.uri
    async with aiohttp.ClientSession(
        headers={"Authorization": aiohttp.encode_basic_auth(AUTH_ID, AUTH_TOKEN)}
    ) as http:
        for direction, expected in (("inbound", [answer["CallUUID"]]), ("outbound", [])):
            url = f"{server.base_url}/v1/Account/{AUTH_ID}/Call/?status=live&call_direction={direction}"
            async with http.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["calls"] == expected, direction
    hangup = (await web.wait_for(lambda r: r.path == "/hangup", timeout=15))[0].params
    assert (hangup["Direction"], hangup["HangupSource"]) == ("inbound", "Caller")
    await sipp_done(peer)  # its BYE got 200
    closed = await asyncio.to_thread(callee.wait_for, "session closed", 10)
    assert closed is not None  # the B leg got our BYE
    assert not web.bad_signatures


async def test_the_caller_holds_and_resumes_with_re_invites(
    sipp: Any, server: Server, web: WebhookReceiver
) -> None:
    """A caller's re-INVITE (hold: a=sendonly; then an offerless one with Session-Expires, a
    refresh that resumes) is answered 200 with our SDP, not 488 (issue 17)."""
    web.xml("/answer5000", '<?xml version="1.0"?><Response><Wait length="10"/></Response>')
    peer = caller(sipp, server, "uac_inbound_hold.xml", "5000")
    await sipp_done(peer)  # every 200 matched: a=recvonly, then our offer with Session-Expires
    hangup = (await web.wait_for(lambda r: r.path == "/hangup", timeout=10))[0].params
    assert hangup["HangupSource"] == "Caller"


async def test_pre_answer_sends_early_media_then_the_first_other_verb_answers(
    sipp: Any, server: Server, web: WebhookReceiver
) -> None:
    """``<PreAnswer>`` on an inbound call: 183 with our SDP, its verbs play as early media,
    and the first verb after it answers the call (200) (issue 17)."""
    web.xml(
        "/answer5000",
        '<?xml version="1.0"?><Response><PreAnswer><Wait length="1"/></PreAnswer>'
        "<Speak>Hello caller</Speak><Hangup/></Response>",
    )
    peer = caller(sipp, server, "uac_inbound_preanswer.xml", "5000")
    await sipp_done(peer)  # 183 with SDP, then 200, then our BYE
    messages = sipp_messages(peer)
    early, ok = messages.index("SIP/2.0 183"), messages.index("SIP/2.0 200")
    assert early < ok
    hangup = (await web.wait_for(lambda r: r.path == "/hangup", timeout=10))[0].params
    assert hangup["HangupCause"] == "NORMAL_CLEARING"


async def test_a_hangup_before_any_answer_refuses_the_inbound_call(
    sipp: Any, server: Server, web: WebhookReceiver
) -> None:
    """A document that only hangs up never answers the call: the INVITE gets a final refusal."""
    web.xml("/answer5000", '<?xml version="1.0"?><Response><Hangup/></Response>')
    peer = caller(sipp, server, "uac_inbound_480.xml", "5000")
    hangup = (await web.wait_for(lambda r: r.path == "/hangup", timeout=10))[0].params
    assert hangup["CallStatus"] != "in-progress"  # never answered
    await sipp_done(peer)
    assert "SIP/2.0 200" not in sipp_messages(peer)
