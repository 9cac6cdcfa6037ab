"""The webhook outbox against a real aiohttp receiver on 127.0.0.1.

Signatures are checked with the plivo SDK's own validators (``validate_v3_signature``,
``validate_signature``); the shared "URL + sorted params" HMAC-SHA1 algorithm (legacy
``X-Plivo-Signature``, ``X-Twilio-Signature``) against published vectors.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature

from softswitch.api.plivo.signing import SIGNATURE as SIG
from softswitch.api.plivo.signing import SIGNERS, sign_v3
from softswitch.signing import (
    hmac_sha1_url_params,
    register_signer,
    unregister_signer,
    url_params_signer,
)
from softswitch.store import CallStore
from softswitch.webhook_http import parse_callback_url, prepare_request
from softswitch.webhooks import WebhookOutbox
from tests.conftest import wait_until
from tests.peers.webhooks import Request, WebhookReceiver

TOKEN = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo"

# What the server does at start: the dialect's schemes in the registry.
for _name, _signer in SIGNERS.items():
    register_signer(_name, _signer)


# --------------------------------------------------------------------------- receiver


@pytest.fixture
async def receiver(webhook_receiver: Any) -> WebhookReceiver:
    """Records every request; ``respond`` decides the reply (200 unless a test says)."""
    return await webhook_receiver()


def ok(receiver: WebhookReceiver) -> list[Request]:
    """The requests the receiver answered 200."""
    return [r for r in receiver.requests if r.status == 200]


@pytest.fixture
def store(tmp_path: Any) -> Any:
    s = CallStore(str(tmp_path / "calls.db"))
    yield s
    s.close()


def make_outbox(store: CallStore, **kw: Any) -> WebhookOutbox:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("retries", 5)
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return WebhookOutbox(store, **kw)


@pytest.fixture
async def outbox(store: CallStore) -> AsyncIterator[WebhookOutbox]:
    ob = make_outbox(store)
    await ob.start()
    yield ob
    await ob.close(drain_timeout_s=0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_v3(rec: Request) -> bool:
    """Validate a received request exactly as a Plivo customer's server would."""
    nonce = rec.headers["X-Plivo-Signature-V3-Nonce"]
    sig = rec.headers["X-Plivo-Signature-V3"]
    if rec.method == "GET":
        return bool(validate_v3_signature("GET", rec.url, nonce, TOKEN, sig))
    return bool(validate_v3_signature("POST", rec.url, nonce, TOKEN, sig, params=dict(rec.form)))


PARAMS = {
    "CallUUID": "c0ffee00-0000-4000-8000-000000000001",
    "From": "+14155550100",
    "To": "sip:alice@example.com",
    "Event": "Ring",
    "CallStatus": "ringing",
    "Note": "a&b=c d+e/f%20?#",
    "Empty": "",
}


# --------------------------------------------------------------------------- pure signing


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "url", ["https://example.com/cb", "https://example.com:8443/a/b?x=1&a=&z=9"]
)
@pytest.mark.parametrize("params", [{}, PARAMS])
def test_v3_signature_validates_with_the_plivo_sdk(method: str, url: str, params: dict) -> None:
    req = prepare_request(url, method, params, auth_token=TOKEN, signature=SIG)
    nonce = req.headers["X-Plivo-Signature-V3-Nonce"]
    sig = req.headers["X-Plivo-Signature-V3"]
    assert req.headers["X-Plivo-Signature-Ma-V3"] == sig
    sdk_params = None if method == "GET" else dict(params)
    assert validate_v3_signature(method, req.url, nonce, TOKEN, sig, params=sdk_params)
    assert not validate_v3_signature(method, req.url, nonce, TOKEN + "x", sig, params=sdk_params)
    assert validate_signature(req.url, nonce, req.headers["X-Plivo-Signature-V2"], TOKEN)


def test_v3_post_signature_with_non_ascii_values() -> None:
    # (The SDK's GET validator cannot parse non-ASCII query strings at all, so only POST here.)
    params = {"CallerName": "Zoë Ångström", "To": "sip:ünï@example.com"}
    req = prepare_request("https://example.com/cb?k=v", "POST", params, auth_token=TOKEN, signature=SIG)
    nonce = req.headers["X-Plivo-Signature-V3-Nonce"]
    assert validate_v3_signature(
        "POST", req.url, nonce, TOKEN, req.headers["X-Plivo-Signature-V3"], params=params
    )


def test_v3_get_signature_with_params_split_from_query() -> None:
    # A receiver may also pass the URL without our params plus the params separately.
    url = "https://example.com/answer?app=1"
    nonce = "12345678901234567890"
    sig = sign_v3(url, {"CallUUID": "x", "From": "1"}, nonce, TOKEN, "GET")
    assert validate_v3_signature(
        "GET", url, nonce, TOKEN, sig, params={"CallUUID": "x", "From": "1"}
    )


def test_v3_signature_is_sensitive_to_every_part() -> None:
    req = prepare_request("https://example.com/cb", "POST", PARAMS, auth_token=TOKEN, signature=SIG)
    nonce = req.headers["X-Plivo-Signature-V3-Nonce"]
    sig = req.headers["X-Plivo-Signature-V3"]
    tampered = dict(PARAMS, To="+15550000000")
    assert not validate_v3_signature("POST", req.url, nonce, TOKEN, sig, params=tampered)
    assert not validate_v3_signature("POST", req.url + "x", nonce, TOKEN, sig, params=PARAMS)
    assert not validate_v3_signature("POST", req.url, nonce + "1", TOKEN, sig, params=PARAMS)


def test_v1_signature_matches_published_vectors() -> None:
    # Twilio's documented example (X-Twilio-Signature), the algorithm of X-Plivo-Signature.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    assert hmac_sha1_url_params(url, params, "12345") == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    callapi = url_params_signer("X-Twilio-Signature")
    assert callapi("POST", url, params, "12345") == {
        "X-Twilio-Signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    }
    repeated = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]}
    assert hmac_sha1_url_params(url, repeated, "12345") == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    # The legacy Plivo helper library's own test vector.
    legacy_url = "http://yourserver.com/twilio/index.php?id=12345&encodedtext=hello+world"
    legacy = {"second_post_param": "world", "first_post_param": "hello"}
    assert hmac_sha1_url_params(legacy_url, legacy, "a1b2c3d4") == "Ma7fvTryuU51vDGO2IT5/KhivpI="


def test_callback_url_fragment_is_parsed_and_stripped() -> None:
    clean, opts = parse_callback_url(
        "https://example.com/a?q=1#ct=2500&rt=99999&rc=9&rp=ct,5xx&tt=50"
    )
    assert clean == "https://example.com/a?q=1"
    assert opts.connect_timeout_s == 2.5
    assert opts.read_timeout_s == 40.0  # clamped to the documented maximum
    assert opts.total_timeout_s == 0.1  # clamped to the documented minimum
    assert opts.retries == 5
    assert opts.retry_on == frozenset({"ct", "5xx"})
    clean, opts = parse_callback_url("https://example.com/a#section")
    assert clean == "https://example.com/a" and opts.retries is None
    _, opts = parse_callback_url("https://example.com/a#rp=all")
    assert opts.retry_on == frozenset({"4xx", "5xx", "ct", "rt"})


def test_prepare_request_rejects_bad_method_and_mode() -> None:
    with pytest.raises(ValueError):
        prepare_request("http://x/", "PUT", {}, auth_token=TOKEN, signature=SIG)
    with pytest.raises(ValueError):
        prepare_request("http://x/", "POST", {}, auth_token=TOKEN, signature="v9")


# --------------------------------------------------------------------------- post


async def test_post_delivers_form_signed(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    did = outbox.post(
        "call-1", "ring", receiver.base + "/ring?app=7", "POST", PARAMS, auth_token=TOKEN, signature=SIG
    )
    assert await outbox.wait_idle("call-1", timeout=5)
    [rec] = receiver.requests
    assert rec.method == "POST"
    assert rec.path == "/ring"
    assert rec.query == {"app": "7"}
    assert rec.form == PARAMS
    assert rec.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert rec.headers["User-Agent"] == "softswitch/0.1"
    assert check_v3(rec)
    assert validate_signature(
        rec.url,
        rec.headers["X-Plivo-Signature-V2-Nonce"],
        rec.headers["X-Plivo-Signature-V2"],
        TOKEN,
    )
    [d] = outbox.deliveries("call-1")
    assert (d.id, d.status, d.attempts, d.last_status, d.event) == (
        did,
        "delivered",
        1,
        200,
        "ring",
    )
    assert d.delivered_at is not None
    [a] = outbox.attempts(did)
    assert a["attempt"] == 1 and a["status"] == 200 and a["error"] is None and a["duration_ms"] >= 0


async def test_get_puts_params_in_query(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    outbox.post(
        "call-g", "hangup", receiver.base + "/hangup?app=7", "GET", PARAMS, auth_token=TOKEN, signature=SIG
    )
    assert await outbox.wait_idle("call-g", timeout=5)
    [rec] = receiver.requests
    assert rec.method == "GET"
    assert rec.form == {}
    assert rec.query == {"app": "7", **PARAMS}
    assert "Content-Type" not in rec.headers
    assert check_v3(rec)


@pytest.fixture
def url_params_schemes() -> Any:
    """The legacy-Plivo and CallAPI schemes, as those dialects will register them."""
    register_signer("v1", url_params_signer("X-Plivo-Signature"))
    register_signer("callapi", url_params_signer("X-Twilio-Signature"))
    yield
    unregister_signer("v1")
    unregister_signer("callapi")


@pytest.mark.usefixtures("url_params_schemes")
async def test_v1_and_callapi_headers(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    outbox.post(
        "c", "hangup", receiver.base + "/v1", "POST", PARAMS, auth_token=TOKEN, signature="v1"
    )
    outbox.post(
        "c", "status", receiver.base + "/ca", "POST", PARAMS, auth_token=TOKEN, signature="callapi"
    )
    outbox.post(
        "c", "status", receiver.base + "/none", "POST", PARAMS, auth_token=TOKEN, signature="none"
    )
    assert await outbox.wait_idle("c", timeout=5)
    v1, ca, none = receiver.requests

    def twilio(url: str, params: dict[str, str]) -> str:
        # Independent implementation of the published algorithm.
        s = url + "".join(k + params[k] for k in sorted(params))
        return base64.b64encode(
            hmac.new(TOKEN.encode(), s.encode(), hashlib.sha1).digest()
        ).decode()

    assert v1.headers["X-Plivo-Signature"] == twilio(v1.url, v1.form)
    assert ca.headers["X-Twilio-Signature"] == twilio(ca.url, ca.form)
    assert not any(
        h.startswith("X-Plivo-Signature") or h == "X-Twilio-Signature" for h in none.headers
    )


async def test_order_per_call_survives_retries(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    failures = {"A": 3}

    def respond(rec: Request) -> int:
        call = rec.form["CallUUID"]
        if failures.get(call, 0) > 0:
            failures[call] -= 1
            return 500
        return 200

    receiver.respond = respond
    ids = [
        outbox.post(
            "A",
            ev,
            receiver.base + f"/{ev}",
            "POST",
            {"CallUUID": "A", "Event": ev},
            auth_token=TOKEN, signature=SIG,
        )
        for ev in ("ring", "answer", "hangup")
    ]
    outbox.post(
        "B",
        "ring",
        receiver.base + "/ring",
        "POST",
        {"CallUUID": "B", "Event": "ring"},
        auth_token=TOKEN, signature=SIG,
    )
    assert await outbox.wait_idle(timeout=10)
    delivered = [(r.form["CallUUID"], r.form["Event"]) for r in ok(receiver)]
    assert [e for c, e in delivered if c == "A"] == ["ring", "answer", "hangup"]
    # Other calls are not held up by A's retries.
    assert delivered.index(("B", "ring")) < delivered.index(("A", "ring"))
    # A's later events were never sent before the first one got through.
    first_ok = next(
        i
        for i, r in enumerate(receiver.requests)
        if r.status == 200 and r.form["CallUUID"] == "A"
    )
    assert all(
        r.form["Event"] == "ring" for r in receiver.requests[:first_ok] if r.form["CallUUID"] == "A"
    )
    ds = {d.id: d for d in outbox.deliveries("A")}
    assert [ds[i].attempts for i in ids] == [4, 1, 1]
    assert all(ds[i].status == "delivered" for i in ids)
    attempts = outbox.attempts(ids[0])
    assert [a["status"] for a in attempts] == [500, 500, 500, 200]


async def test_receiver_down_then_up(store: CallStore) -> None:
    port = free_port()
    ob = make_outbox(store, retries=40, backoff_s=0.02, backoff_max_s=0.1)
    await ob.start()
    try:
        did = ob.post(
            "late", "hangup", f"http://127.0.0.1:{port}/h", "POST", PARAMS, auth_token=TOKEN, signature=SIG
        )
        await wait_until(lambda: ob.attempts(did), timeout=5, what="a first, failed attempt")
        assert ob.deliveries("late")[0].status == "pending"
        r = WebhookReceiver()
        await r.start(port)
        try:
            assert await ob.wait_idle("late", timeout=10)
        finally:
            await r.stop()
        [d] = ob.deliveries("late")
        assert d.id == did and d.status == "delivered" and d.attempts >= 2
        attempts = ob.attempts(did)
        assert attempts[0]["status"] is None and attempts[0]["error"]
        assert attempts[-1]["status"] == 200
        assert len(r.requests) == 1 and check_v3(r.requests[0])
    finally:
        await ob.close(drain_timeout_s=0)


async def test_dead_receiver_fails_without_blocking(store: CallStore) -> None:
    port = free_port()
    ob = make_outbox(store, retries=2, backoff_s=0.01)
    await ob.start()
    try:
        ids = [
            ob.post("dead", ev, f"http://127.0.0.1:{port}/x", "POST", PARAMS, auth_token=TOKEN, signature=SIG)
            for ev in ("ring", "hangup")
        ]
        # post() returned before any network activity: nothing attempted yet.
        assert [d.attempts for d in ob.deliveries("dead")] == [0, 0]
        assert ob.pending_count("dead") == 2
        assert await ob.wait_idle("dead", timeout=10)
        ds = ob.deliveries("dead")
        assert [d.id for d in ds] == ids
        for d in ds:
            assert d.status == "failed" and d.attempts == 3 and d.last_status is None
            assert d.last_error and "Connect" in d.last_error
            assert len(ob.attempts(d.id)) == 3
    finally:
        await ob.close(drain_timeout_s=0)


async def test_4xx_is_permanent_but_429_is_retried(
    outbox: WebhookOutbox, receiver: WebhookReceiver
) -> None:
    seen = {"n": 0}

    def respond(rec: Request) -> Any:
        if rec.path == "/gone":
            return 404
        seen["n"] += 1
        if seen["n"] == 1:
            return web.Response(status=429, headers={"Retry-After": "0"})
        return 200

    receiver.respond = respond
    gone = outbox.post("c4", "ring", receiver.base + "/gone", "POST", {"a": "1"}, auth_token=TOKEN, signature=SIG)
    busy = outbox.post(
        "c4", "hangup", receiver.base + "/busy", "POST", {"a": "2"}, auth_token=TOKEN, signature=SIG
    )
    assert await outbox.wait_idle("c4", timeout=5)
    ds = {d.id: d for d in outbox.deliveries("c4")}
    assert (ds[gone].status, ds[gone].attempts, ds[gone].last_status) == ("failed", 1, 404)
    assert ds[gone].last_error == "HTTP 404"
    assert (ds[busy].status, ds[busy].attempts) == ("delivered", 2)


async def test_fragment_overrides_retry_policy(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    receiver.respond = lambda rec: 500 if rec.path == "/once" else 404
    once = outbox.post("cf", "ring", receiver.base + "/once#rc=0", "POST", {}, auth_token=TOKEN, signature=SIG)
    four = outbox.post(
        "cf", "hangup", receiver.base + "/four#rc=2&rp=4xx", "POST", {}, auth_token=TOKEN, signature=SIG
    )
    assert await outbox.wait_idle("cf", timeout=5)
    ds = {d.id: d for d in outbox.deliveries("cf")}
    assert (ds[once].status, ds[once].attempts) == ("failed", 1)
    assert (ds[four].status, ds[four].attempts) == ("failed", 3)
    assert ds[once].url == receiver.base + "/once"  # the fragment is not part of the request


async def test_post_does_not_follow_redirects(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    receiver.respond = lambda rec: (
        web.Response(status=302, headers={"Location": receiver.base + "/elsewhere"})
        if rec.path == "/r"
        else 200
    )
    outbox.post("cr", "ring", receiver.base + "/r", "POST", {}, auth_token=TOKEN, signature=SIG)
    assert await outbox.wait_idle("cr", timeout=5)
    [d] = outbox.deliveries("cr")
    assert d.status == "failed" and d.attempts == 1 and d.last_status == 302
    assert [r.path for r in receiver.requests] == ["/r"]


async def test_pending_deliveries_resume_in_a_new_outbox(tmp_path: Any, receiver: WebhookReceiver) -> None:
    path = str(tmp_path / "resume.db")
    store1 = CallStore(path)
    receiver.respond = lambda rec: 503
    ob1 = make_outbox(store1, retries=1000, backoff_s=0.05, backoff_max_s=0.05)
    # Posted before start(): persisted, delivered later.
    early = ob1.post(
        "R", "ring", receiver.base + "/ring", "POST", {"Event": "ring"}, auth_token=TOKEN, signature=SIG
    )
    await ob1.start()
    later = ob1.post(
        "R", "hangup", receiver.base + "/hangup", "GET", {"Event": "hangup"}, auth_token=TOKEN, signature=SIG
    )
    await receiver.wait_for(count=2, timeout=5)
    await ob1.close(drain_timeout_s=0)
    store1.close()
    assert receiver.requests and all(r.path == "/ring" for r in receiver.requests)

    receiver.respond = lambda rec: 200
    receiver.requests.clear()
    store2 = CallStore(path)
    assert [d["id"] for d in store2.pending_deliveries()] == [early, later]
    ob2 = make_outbox(store2)
    await ob2.start()
    try:
        assert await ob2.wait_idle(timeout=5)
        assert [r.path for r in receiver.requests] == ["/ring", "/hangup"]
        assert all(check_v3(r) for r in receiver.requests)
        assert receiver.requests[1].query == {"Event": "hangup"}
        ds = ob2.deliveries("R")
        assert [d.status for d in ds] == ["delivered", "delivered"]
        assert ds[0].attempts >= 2  # attempt numbers continue across processes
    finally:
        await ob2.close(drain_timeout_s=0)
        store2.close()


async def test_resumed_delivery_is_signed_again_by_its_scheme(
    tmp_path: Any, receiver: WebhookReceiver
) -> None:
    path = str(tmp_path / "resign.db")
    store1 = CallStore(path)
    ob1 = make_outbox(store1)  # never started: the row waits for the next process
    did = ob1.post(
        "S", "hangup", receiver.base + "/h", "POST", PARAMS, auth_token="old", signature=SIG
    )
    assert store1.get_delivery(did)["signature"] == SIG
    store1.close()
    store2 = CallStore(path)
    ob2 = make_outbox(store2, auth_token_for=lambda call_uuid: TOKEN if call_uuid == "S" else None)
    await ob2.start()
    try:
        assert await ob2.wait_idle(timeout=5)
        [rec] = receiver.requests
        assert check_v3(rec)  # signed again, with the account's current token
        [d] = ob2.deliveries("S")
        assert (d.status, d.signature) == ("delivered", SIG)
    finally:
        await ob2.close(drain_timeout_s=0)
        store2.close()


@pytest.mark.usefixtures("url_params_schemes")
async def test_resumed_delivery_of_an_unknown_scheme_keeps_its_headers(
    tmp_path: Any, receiver: WebhookReceiver
) -> None:
    path = str(tmp_path / "unknown.db")
    store1 = CallStore(path)
    make_outbox(store1).post(
        "U", "hangup", receiver.base + "/h", "POST", PARAMS, auth_token=TOKEN, signature="v1"
    )
    store1.close()
    unregister_signer("v1")
    store2 = CallStore(path)
    ob2 = make_outbox(store2, auth_token_for=lambda call_uuid: "another token")
    await ob2.start()
    try:
        assert await ob2.wait_idle(timeout=5)
        [rec] = receiver.requests
        assert rec.headers["X-Plivo-Signature"] == hmac_sha1_url_params(rec.url, rec.form, TOKEN)
    finally:
        await ob2.close(drain_timeout_s=0)
        store2.close()


async def test_close_drains_then_leaves_the_rest_pending(
    store: CallStore, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda rec: 500
    ob = make_outbox(store, retries=1000, backoff_s=0.05, backoff_max_s=0.05)
    await ob.start()
    did = ob.post("D", "ring", receiver.base + "/x", "POST", {}, auth_token=TOKEN, signature=SIG)
    await ob.close(drain_timeout_s=0.2)
    [d] = ob.deliveries("D")
    assert d.id == did and d.status == "pending" and d.attempts >= 1


# --------------------------------------------------------------------------- fetch


async def test_fetch_retries_then_returns_body(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    n = {"i": 0}

    def respond(rec: Request) -> Any:
        n["i"] += 1
        if n["i"] <= 2:
            return 500
        return web.Response(
            text="<Response><Speak>hi</Speak></Response>", content_type="application/xml"
        )

    receiver.respond = respond
    res = await outbox.fetch(
        receiver.base + "/answer", "POST", PARAMS, auth_token=TOKEN, signature=SIG, attempts=3, call_uuid="F"
    )
    assert res.ok and res.status == 200 and res.attempts == 3 and res.error is None
    assert res.body == "<Response><Speak>hi</Speak></Response>"
    assert res.content_type and res.content_type.startswith("application/xml")
    assert all(check_v3(r) for r in receiver.requests)
    [d] = outbox.deliveries("F")
    assert d.kind == "fetch" and d.status == "delivered" and d.attempts == 3
    assert [a["status"] for a in outbox.attempts(d.id)] == [500, 500, 200]


async def test_fetch_gives_up(outbox: WebhookOutbox, receiver: WebhookReceiver) -> None:
    receiver.respond = lambda rec: 500
    res = await outbox.fetch(receiver.base + "/a", "GET", {"x": "1"}, auth_token=TOKEN, signature=SIG, attempts=3)
    assert not res.ok and res.attempts == 3 and res.status == 500 and res.error == "HTTP 500"
    receiver.respond = lambda rec: 404
    res = await outbox.fetch(receiver.base + "/a", "GET", {}, auth_token=TOKEN, signature=SIG, attempts=3)
    assert not res.ok and res.attempts == 1 and res.status == 404  # a 4xx is final
    res = await outbox.fetch(
        f"http://127.0.0.1:{free_port()}/a", "POST", {}, auth_token=TOKEN, signature=SIG, attempts=2
    )
    assert not res.ok and res.attempts == 2 and res.status is None and res.error


async def test_fetch_deadline_bounds_slow_receiver(
    outbox: WebhookOutbox, receiver: WebhookReceiver
) -> None:
    release = asyncio.Event()

    async def slow(rec: Request) -> int:
        try:
            await asyncio.wait_for(release.wait(), 5)
        except TimeoutError:
            pass
        return 200

    receiver.respond = slow
    res = await outbox.fetch(
        receiver.base + "/slow", "POST", {}, auth_token=TOKEN, signature=SIG, attempts=3, deadline_s=0.3
    )
    release.set()
    assert not res.ok and res.error and res.attempts >= 1
    assert "timeout" in res.error


async def test_fetch_follows_redirects_and_bounds_body(
    outbox: WebhookOutbox, receiver: WebhookReceiver
) -> None:
    def respond(rec: Request) -> Any:
        if rec.path == "/moved":
            return web.Response(status=302, headers={"Location": receiver.base + "/xml"})
        if rec.path == "/big":
            return web.Response(text="x" * 5000)
        return web.Response(text="<Response/>")

    receiver.respond = respond
    res = await outbox.fetch(receiver.base + "/moved", "GET", {"a": "1"}, auth_token=TOKEN, signature=SIG)
    assert res.ok and res.body == "<Response/>"
    res = await outbox.fetch(receiver.base + "/big", "GET", {}, auth_token=TOKEN, signature=SIG, max_body=1000)
    assert not res.ok and res.attempts == 1 and "larger" in (res.error or "")
