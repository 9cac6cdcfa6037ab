"""The network policy of every URL the server fetches or posts to (``softswitch.netpolicy``),
against a real server, the real webhook receiver and sipp callees on loopback.

Nothing here ever connects off loopback: the metadata address ``169.254.169.254`` is refused
before a socket exists (at request time when it is a literal, by the connector's socket
factory when a redirect leads there), and the refusal's text proves it.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from softswitch.netpolicy import FetchDenied, FetchPolicy
from tests.conftest import needs_sipp
from tests.peers import plivo_api
from tests.peers.plivo_api import AUTH_ID, Env, basic, sipp_done, wait_record
from tests.peers.webhooks import WebhookReceiver

env = plivo_api.env
receiver = plivo_api.receiver
sdk_base = plivo_api.sdk_base

METADATA = "http://169.254.169.254/latest/meta-data/"


async def post(env: Env, path: str, data: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(env.base + path, data=data, headers=basic()) as r,
    ):
        return r.status, await r.json(content_type=None)


def own_api(env: Env) -> str:
    return f"{env.base}/v1/Account/{AUTH_ID}/Call/"


# --- the policy itself ----------------------------------------------------------------------------


def test_policy_decisions() -> None:
    p = FetchPolicy()
    p.add_own("127.0.0.1", 8088)
    assert p.refusal("169.254.169.254", 80) is not None
    assert p.refusal("::ffff:169.254.169.254", 80) is not None  # IPv4-mapped is the same host
    assert p.refusal("fe80::1", 80) is not None
    assert p.refusal("127.0.0.1", 8088) is not None  # our own API
    assert p.refusal("127.0.0.1", 8089) is None  # loopback stays allowed (documented)
    assert p.refusal("192.0.2.10", 80) is None
    assert (
        FetchPolicy(allow=["169.254.169.254/32"]).refusal("169.254.169.254", 80) is None
    )  # allow wins
    assert FetchPolicy(deny=["192.0.2.0/24"]).refusal("192.0.2.10", 80) is not None
    assert p.url_refusal("http://[::ffff:a9fe:a9fe]/") is not None
    assert p.url_refusal("https://example.com/") is None  # names are checked when resolved
    p.own_paths = (__import__("re").compile(r"/files/[^/]+"),)
    assert p.url_refusal("http://127.0.0.1:8088/files/x.wav") is None


def test_socket_factory_refuses_before_creating_a_socket() -> None:
    p = FetchPolicy()
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))
    with pytest.raises(FetchDenied):
        p.socket_factory(info)


# --- at request time: literal addresses, in each dialect's shape ---------------------------------


async def test_literal_denied_callback_urls_are_refused_at_request_time(
    env: Env, receiver: WebhookReceiver
) -> None:
    base = {"from": "1000", "to": "sip:nobody@127.0.0.1:9", "answer_url": receiver.url("/answer")}
    for name, url in (
        ("answer_url", METADATA),
        ("hangup_url", "http://[fe80::1]/x"),
        ("ring_url", own_api(env)),
        ("fallback_url", "http://[::ffff:169.254.169.254]/"),
    ):
        status, body = await post(env, f"/v1/Account/{AUTH_ID}/Call/", {**base, name: url})
        assert status == 400, (name, status, body)
        assert body["error"].startswith(f"{name}: ") and "network policy" in body["error"], body
    # CallAPI: Twilio's error shape, naming the parameter
    status, body = await post(
        env,
        f"/2010-04-01/Accounts/{AUTH_ID}/Calls.json",
        {"To": "sip:nobody@127.0.0.1:9", "From": "+15551230000", "Url": METADATA},
    )
    assert status == 400 and body["status"] == 400 and body["message"].startswith("Url: "), body
    # legacy: 200 Success false past authentication
    status, body = await post(
        env,
        "/v0.1/Call/",
        {"From": "1000", "To": "2000", "Gateways": "user/", "AnswerUrl": METADATA},
    )
    assert status == 200 and body["Success"] is False and "AnswerUrl" in body["Message"], body
    assert receiver.requests == []  # nothing was fetched anywhere


# --- at fetch time: a redirect to the metadata address, a name for our own API --------------------


@needs_sipp
async def test_redirect_to_metadata_is_refused_and_the_call_ends_cleanly(
    sipp: Any, env: Env, receiver: WebhookReceiver
) -> None:
    peer = sipp("uas_answer.xml")
    receiver.routes["/answer"] = lambda _r: web.Response(status=302, headers={"Location": METADATA})
    r = await env.sdk(
        env.client.calls.create,
        from_="1000",
        to_=peer.uri,
        answer_url=receiver.url("/answer"),
        hangup_url=receiver.url("/hangup"),
    )
    hang = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=15)).params
    assert hang["HangupSource"] == "Error" and hang["CallStatus"] == "completed"
    rec = await wait_record(env.server, r.request_uuid)
    assert rec["call_status"] == "completed"
    deliveries = env.server.store.list_deliveries(rec["call_uuid"])
    fetches = [d for d in deliveries if d.get("kind") == "fetch"]
    assert fetches, deliveries
    # one request per attempt reached the receiver; each redirect was refused, none retried
    # as a connection failure, and the error says the policy refused 169.254.169.254
    assert len(receiver.of("/answer")) == 1
    text = repr(fetches)
    assert "network policy" in text and "169.254.169.254" in text, text
    await sipp_done(peer)


@needs_sipp
async def test_own_api_by_name_is_refused_at_fetch_time_without_retries(
    sipp: Any, env: Env, receiver: WebhookReceiver
) -> None:
    peer = sipp("uas_answer.xml")
    own_by_name = own_api(env).replace("127.0.0.1", "localhost")
    r = await env.sdk(
        env.client.calls.create,
        from_="1000",
        to_=peer.uri,
        answer_url=own_by_name,
        hangup_url=receiver.url("/hangup"),
    )
    hang = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=15)).params
    assert hang["HangupSource"] == "Error"
    rec = await wait_record(env.server, r.request_uuid)
    fetches = [
        d for d in env.server.store.list_deliveries(rec["call_uuid"]) if d.get("kind") == "fetch"
    ]
    assert len(fetches) == 1 and fetches[0]["attempts"] == 1, fetches  # no retry storm
    assert "own HTTP API" in repr(fetches), fetches
    await sipp_done(peer)


async def test_play_audio_urls_are_checked_too(tmp_path: Any) -> None:
    from softswitch.app.document import XmlAppError
    from softswitch.app.sources import MediaCache

    cache = MediaCache(tmp_path)
    with pytest.raises(XmlAppError, match="network policy"):
        await cache.path_for(METADATA + "a.wav")


async def test_own_credential_free_routes_stay_fetchable(env: Env) -> None:
    """A recording of ours played back (``<Play>`` of a RecordUrl) goes to our own API: the
    routes served without credentials are let through, the rest of the API is not."""
    import uuid

    from softswitch.netpolicy import fetching

    manager = env.server.manager
    assert manager is not None
    name = f"{uuid.uuid4()}.wav"
    path = manager.recording_path(name, AUTH_ID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + b"\0" * 100)
    call: Any = type("C", (), {"account": manager.account(AUTH_ID), "dialect": manager.dialect})()
    url = manager.recording_url(call, name)
    policy = env.server.fetch_policy
    async with aiohttp.ClientSession(connector=policy.connector()) as s:
        with fetching(policy, url) as headers:
            async with s.get(url, headers=headers) as r:
                assert r.status == 200
        with fetching(policy, own_api(env)) as headers, pytest.raises(aiohttp.ClientConnectorError):
            async with s.get(own_api(env), headers={**headers, **basic()}):
                pass
