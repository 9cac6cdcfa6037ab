"""Phones registered with softswitch (issue 17, "registrar: welcome"): a real baresip REGISTERs
as ``alice`` with digest against ``[[users]]``, then calls reach it through the API (the legacy
``Gateways=user/`` string) and through a ``<Dial><User>`` of an answer document; a wrong
password is refused; an un-REGISTER (our own REGISTER client over a real socket) removes the
binding; a user without a phone fails ``USER_NOT_REGISTERED``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sip.aio import GatewayConfig, UserAgent, UserAgentConfig
from softswitch.config import InboundRoute, User
from tests import test_api_legacy as base
from tests.peers import baresip as baresip_peer
from tests.peers.baresip import needs_baresip
from tests.peers.webhooks import Request, WebhookReceiver
from tests.test_api_legacy import is_hangup

pytestmark = [pytest.mark.peer]

baresip = baresip_peer.baresip
legacy = base.legacy

USERS = [
    User("alice", "secret"),
    User("bob", "hunter2", account=base.OTHER_ID),
    User("carol", "carol-pw"),
]
HOLD = '<?xml version="1.0"?><Response><Wait length="30"/></Response>'


async def _until(pred: Any, timeout: float) -> bool:
    """For what only the server's table or baresip's log shows (nothing signals it)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _contacts(api: Any, user: str) -> list[str]:
    return [b["contact"] for b in api.server.ua.bindings() if b["user"] == user]


def _reply(document: str) -> Any:
    def reply(r: Request) -> Any:
        if is_hangup(r) or r.path.startswith("/ring"):
            return (200, "ok", "text/plain")
        return document

    return reply


@needs_baresip
async def test_baresip_registers_and_an_api_call_to_user_alice_rings_it(
    baresip: Any, legacy: Any, webhook_receiver: Any
) -> None:
    api = await legacy(users=USERS)
    port = api.server.ua.local_port
    phone = baresip(user="alice", registrar=f"127.0.0.1:{port}", password="secret")
    assert await _until(lambda: _contacts(api, "alice"), 5), phone.log()
    (binding,) = api.server.ua.bindings()
    assert binding["transport"] == "udp" and binding["expires_in"] > 60
    assert "200 OK" in phone.log() and "[1 binding]" in phone.log()

    receiver: WebhookReceiver = await webhook_receiver(respond=_reply(HOLD))
    _, body = await api.post(
        "Call",
        From="1000",
        To="alice",
        Gateways="user/",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
    )
    assert body["Success"] is True
    (answer,) = await receiver.wait_for(path="/answer", timeout=10)
    assert answer.form["CallStatus"] == "in-progress" and answer.form["To"] == "alice"
    assert phone.wait_for("Call established", 5) is not None, phone.log()
    await api.post("HangupCall", CallUUID=answer.form["CallUUID"])
    (hangup,) = await receiver.wait_for(path="/hangup", timeout=10)
    assert hangup.form["HangupCause"] == "NORMAL_CLEARING"

    # bob has no phone: the attempt fails at once, no INVITE.
    _, body = await api.post(
        "Call",
        From="1000",
        To="bob",
        Gateways="user/",
        AnswerUrl=receiver.url("/answer-bob"),
        HangupUrl=receiver.url("/hangup-bob"),
    )
    (hangup,) = await receiver.wait_for(path="/hangup-bob", timeout=10)
    assert hangup.form["HangupCause"] == "USER_NOT_REGISTERED"


@needs_baresip
async def test_an_answer_document_dials_the_registered_phone_with_dial_user(
    baresip: Any, legacy: Any, webhook_receiver: Any
) -> None:
    api = await legacy(users=USERS)
    port = api.server.ua.local_port
    phone = baresip(user="alice", registrar=f"127.0.0.1:{port}", password="secret")
    caller = baresip()  # the A leg: a plain callee the API calls first
    assert await _until(lambda: _contacts(api, "alice"), 5), phone.log()
    dial = (
        '<?xml version="1.0"?><Response>'
        f'<Dial callbackUrl="CB"><User>sip:alice@127.0.0.1:{port}</User></Dial></Response>'
    )
    receiver: WebhookReceiver = await webhook_receiver(respond=_reply("-"))
    receiver_doc = dial.replace("CB", receiver.url("/dial-callback"))
    receiver.respond = _reply(receiver_doc)  # type: ignore[attr-defined]
    _, body = await api.post(
        "Call",
        From="1000",
        To=caller.uri.removeprefix("sip:"),
        Gateways="sofia/internal/",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
    )
    assert body["Success"] is True
    connected = await receiver.wait_for(
        lambda r: r.path == "/dial-callback" and r.form.get("DialAction") == "connected", 15
    )
    assert connected, phone.log()[-2000:]
    assert phone.wait_for("Call established", 5) is not None, phone.log()
    await api.post("HangupCall", CallUUID=connected[0].form["DialALegUUID"])
    await receiver.wait_for(path="/hangup", timeout=10)


@needs_baresip
async def test_a_wrong_password_is_refused_and_nothing_is_bound(baresip: Any, legacy: Any) -> None:
    api = await legacy(users=USERS)
    port = api.server.ua.local_port
    phone = baresip(user="alice", registrar=f"127.0.0.1:{port}", password="wrong")
    assert await _until(lambda: "403 Forbidden" in phone.log(), 5), phone.log()
    assert api.server.ua.bindings() == []


async def test_our_register_client_registers_then_its_un_register_removes_the_binding(
    legacy: Any,
) -> None:
    """Over real UDP sockets: sip.aio's REGISTER client (a gateway with ``register = true``)
    against the registrar, then ``close()`` sends Expires: 0 (answering the 401 again)."""
    api = await legacy(users=USERS, registrar_realm="pbx.test")
    port = api.server.ua.local_port
    gateway = GatewayConfig(
        name="pbx",
        host="127.0.0.1",
        port=port,
        username="alice",
        password="secret",
        from_domain="pbx.test",
        register=True,
        register_expires=300,
    )
    phone = UserAgent(UserAgentConfig(port=0, gateways=[gateway]))
    await phone.start()
    try:
        assert await _until(lambda: phone.registrations()[0]["state"] == "registered", 5)
        (binding,) = api.server.ua.bindings()
        assert binding["contact"] == f"sip:alice@127.0.0.1:{phone.local_port}"
        assert binding["expires_in"] == 300
        health = await (await api.session.get(f"{api.base}/health")).json()
        assert health["registered_users"] == 1
    finally:
        await phone.close()
    assert api.server.ua.bindings() == []


async def test_a_user_of_another_account_is_not_reachable(
    legacy: Any, webhook_receiver: Any
) -> None:
    """bob belongs to the other account: the main account's call fails as if unregistered."""
    api = await legacy(users=USERS, registrar_realm="pbx.test")
    port = api.server.ua.local_port
    gateway = GatewayConfig(
        name="pbx",
        host="127.0.0.1",
        port=port,
        username="bob",
        password="hunter2",
        from_domain="pbx.test",
        register=True,
    )
    phone = UserAgent(UserAgentConfig(port=0, gateways=[gateway]))
    await phone.start()
    try:
        assert await _until(lambda: phone.registrations()[0]["state"] == "registered", 5)
        receiver: WebhookReceiver = await webhook_receiver(respond=_reply(HOLD))
        await api.post(
            "Call",
            From="1000",
            To="bob",
            Gateways="user/",
            AnswerUrl=receiver.url("/answer"),
            HangupUrl=receiver.url("/hangup"),
        )
        (hangup,) = await receiver.wait_for(path="/hangup", timeout=10)
        assert hangup.form["HangupCause"] == "USER_NOT_REGISTERED"
        assert phone.calls == []  # no INVITE reached it
    finally:
        await phone.close()


@needs_baresip
async def test_dial_user_rings_every_registered_phone_of_the_user(
    baresip: Any, legacy: Any, webhook_receiver: Any
) -> None:
    """alice has two phones: a ``<Dial><User>`` rings both; the first to answer is bridged,
    the other (answering after 3 s) is cancelled."""
    api = await legacy(users=USERS)
    port = api.server.ua.local_port
    desk = baresip(user="alice", registrar=f"127.0.0.1:{port}", password="secret")
    mobile = baresip(
        user="alice", registrar=f"127.0.0.1:{port}", password="secret", answer_delay_ms=3000
    )
    caller = baresip()
    assert await _until(lambda: len(_contacts(api, "alice")) == 2, 5), _contacts(api, "alice")
    receiver: WebhookReceiver = await webhook_receiver(respond=_reply(HOLD))
    receiver.respond = _reply(  # type: ignore[attr-defined]
        '<?xml version="1.0"?><Response>'
        f'<Dial callbackUrl="{receiver.url("/dial-callback")}">'
        f"<User>sip:alice@127.0.0.1:{port}</User></Dial></Response>"
    )
    await api.post(
        "Call",
        From="1000",
        To=caller.uri.removeprefix("sip:"),
        Gateways="sofia/internal/",
        AnswerUrl=receiver.url("/answer"),
        HangupUrl=receiver.url("/hangup"),
    )
    connected = await receiver.wait_for(
        lambda r: r.path == "/dial-callback" and r.form.get("DialAction") == "connected", 15
    )
    assert desk.wait_for("Call established", 5) is not None, desk.log()[-2000:]
    assert mobile.wait_for("Incoming call from", 5) is not None, mobile.log()[-2000:]
    await api.post("HangupCall", CallUUID=connected[0].form["DialALegUUID"])
    await receiver.wait_for(path="/hangup", timeout=10)
    assert "Call established" not in mobile.log()


@needs_baresip
async def test_a_registered_phone_calls_another_through_an_inbound_route(
    baresip: Any, legacy: Any, webhook_receiver: Any
) -> None:
    """A small PBX: alice's phone (registered) dials 6000; the inbound route's document
    Dials carol's phone (registered) by ``<User>``; both phones are in the call."""
    receiver: WebhookReceiver = await webhook_receiver()
    routes = [
        InboundRoute(
            number="6000",
            answer_url=receiver.url("/answer6000"),
            hangup_url=receiver.url("/hangup"),
            dialect="legacy",
        )
    ]
    api = await legacy(users=USERS, inbound=routes)
    port = api.server.ua.local_port
    receiver.xml(
        "/answer6000",
        f'<?xml version="1.0"?><Response><Dial callbackUrl="{receiver.url("/dial-callback")}">'
        f"<User>sip:carol@127.0.0.1:{port}</User></Dial></Response>",
    )
    alice = baresip(user="alice", registrar=f"127.0.0.1:{port}", password="secret", controlled=True)
    carol = baresip(user="carol", registrar=f"127.0.0.1:{port}", password="carol-pw")
    assert await _until(lambda: len(api.server.ua.bindings()) == 2, 5), api.server.ua.bindings()
    alice.command("dial", f"sip:6000@127.0.0.1:{port}")
    connected = await receiver.wait_for(
        lambda r: r.path == "/dial-callback" and r.form.get("DialAction") == "connected", 15
    )
    answer = receiver.of("/answer6000")[0].form
    assert (answer["Direction"], answer["To"], answer["From"]) == ("inbound", "6000", "alice")
    assert carol.wait_for("Call established", 5) is not None, carol.log()[-2000:]
    assert alice.wait_for("Call established", 5) is not None, alice.log()[-2000:]
    alice.command("hangup")
    (hangup,) = await receiver.wait_for(path="/hangup", timeout=10)
    assert hangup.form["CallUUID"] == connected[0].form["DialALegUUID"]


async def test_a_phone_registered_over_tcp_is_called_on_its_connection(legacy: Any) -> None:
    """A phone that REGISTERs over TCP is called on that same connection (behind a NAT
    nothing else reaches it), which stays open while the binding lives, idle or not."""
    api = await legacy(users=USERS, registrar_realm="pbx.test")
    api.server.ua.sip.tcp.idle_timeout = 0.2  # an unused connection would go at once
    port = api.server.ua.sip.tcp.local[1]
    gateway = GatewayConfig(
        name="pbx",
        host="127.0.0.1",
        port=port,
        transport="tcp",
        username="carol",
        password="carol-pw",
        from_domain="pbx.test",
        register=True,
        register_expires=300,
    )
    phone = UserAgent(UserAgentConfig(port=0, gateways=[gateway], accept_inbound=True))
    offered: asyncio.Queue[Any] = asyncio.Queue()
    phone.on_incoming = offered.put_nowait
    await phone.start()
    try:
        assert await _until(lambda: phone.registrations()[0]["state"] == "registered", 5)
        (binding,) = api.server.ua.bindings()
        assert binding["transport"] == "tcp"
        await asyncio.sleep(0.6)  # past the idle timeout: kept, a binding lives on it
        assert phone.tcp is not None and len(phone.tcp.connections) == 1
        first = phone.tcp.connections[0]
        call = await api.server.ua.dial("user/carol", from_user="1000")
        incoming = await asyncio.wait_for(offered.get(), 5)
        assert incoming.source.connection is first  # our INVITE came on its connection
        assert incoming.request.uri.startswith("sip:carol@127.0.0.1")
        incoming.reject(486)
        end = await asyncio.wait_for(call.wait_terminated(), 5)
        assert end.cause == "USER_BUSY"
    finally:
        await phone.close()
