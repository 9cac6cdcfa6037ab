"""The Plivo v1 API, driven by the official ``plivo`` SDK against an in-process server.

The SIP side is a scripted stand-in for ``sip.aio.ua.UserAgent`` (same ``dial`` /
``OutboundCall`` surface) so these tests run in seconds; ``test_api_plivo_sipp.py`` runs
the same flows through the real user agent against sipp. Everything else is real: the
aiohttp server, the SQLite store, the webhook outbox, and an HTTP webhook receiver that
checks every callback's ``X-Plivo-Signature-V3`` with the SDK's own validator.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import plivo
import plivo.rest.client as plivo_client
import pytest
from aiohttp import web
from plivo import exceptions as plivo_exc
from plivo.utils.signature_v3 import validate_v3_signature

from sip import causes
from sip.events import Answered, EarlyMedia, Ringing, Terminated, Trying
from softswitch.api.plivo import ApiError, parse_call_request, parse_sip_headers
from softswitch.config import Account, Config, Limits
from softswitch.server import Server, serve

AUTH_ID = "MAAAAAAAAAAAAAAAAAAA"
AUTH_TOKEN = "secret-token-0123456789abcdefghijklmnop"
OTHER_ID = "MABBBBBBBBBBBBBBBBBB"
OTHER_TOKEN = "other-token-0123456789abcdefghijklmnopq"


# --- a scripted SIP user agent -----------------------------------------------------------------


class FakeLeg:
    """Quacks like ``sip.aio.ua.OutboundCall``; the target's user part picks a script."""

    def __init__(self, target: str, kwargs: dict[str, Any]) -> None:
        self.target = target
        self.kwargs = kwargs
        self.uuid = kwargs.get("call_uuid")
        self.call_id = f"fake-{self.uuid}"
        self.state = "trying"
        self.terminated: Terminated | None = None
        self.answered = False
        self.digits: list[tuple[str, int | None]] = []
        self.hangups: list[str] = []
        self._events: list[Any] = []
        self._waiters: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _emit(self, ev: Any) -> None:
        if self.terminated is not None:
            return
        if isinstance(ev, Answered):
            self.answered = True
            self.state = "answered"
        if isinstance(ev, Terminated):
            self.terminated = ev
            self.state = "terminated"
        self._events.append(ev)
        for w in self._waiters:
            w.set()
        self._waiters.clear()

    async def events(self) -> AsyncIterator[Any]:
        i = 0
        while True:
            while i < len(self._events):
                ev = self._events[i]
                i += 1
                yield ev
                if isinstance(ev, Terminated):
                    return
            w = asyncio.Event()
            self._waiters.append(w)
            await w.wait()

    def add_listener(self, fn: Any) -> None:  # pragma: no cover - the manager uses events()
        raise NotImplementedError

    async def hangup(self, cause: str = causes.NORMAL_CLEARING, source: str = "caller") -> None:
        self.hangups.append(cause)
        if self.terminated is not None:
            return
        if self.answered:
            self._emit(Terminated(time.time(), cause, None, "BYE", source))
        else:
            self._emit(Terminated(time.time(), causes.ORIGINATOR_CANCEL, 487, "CANCEL", source))

    async def send_digits(self, digits: str, mode: str = "auto", tone_ms: int | None = None) -> None:
        self.digits.append((digits, tone_ms))

    def run(self, script: str, ring_timeout: float) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._script(script, ring_timeout)))

    async def _script(self, script: str, ring_timeout: float) -> None:
        now = time.time
        self._emit(Trying(now()))
        await asyncio.sleep(0.02)
        if script == "unreachable":
            self._emit(Terminated(now(), causes.RECOVERY_ON_TIMER_EXPIRE, 408, "timeout", "error"))
            return
        if script == "early":
            self._emit(EarlyMedia(now(), 183))
        else:
            self._emit(Ringing(now(), 180, "Ringing"))
        if script == "busy":
            await asyncio.sleep(0.02)
            self._emit(Terminated(now(), causes.USER_BUSY, 486, "Busy Here", "callee"))
            return
        if script == "ring":
            await asyncio.sleep(ring_timeout)
            self._emit(Terminated(now(), causes.NO_ANSWER, None, "ring timeout", "timeout"))
            return
        await asyncio.sleep(0.05)
        self._emit(Answered(now()))
        if script.startswith("bye"):  # callee hangs up after N tenths of a second
            await asyncio.sleep(int(script[3:] or "3") / 10)
            self._emit(Terminated(now(), causes.NORMAL_CLEARING, None, "BYE", "callee"))
        # "answer" / "early": held until hung up


@dataclass
class FakeDialer:
    legs: list[FakeLeg] = field(default_factory=list)

    async def dial(self, target: str, **kwargs: Any) -> FakeLeg:
        if target.startswith("bad"):
            raise ValueError("malformed target")
        if target.isdigit() or target.startswith("+"):
            raise LookupError("no gateway for number")
        user = target.split(":", 1)[-1].split("@", 1)[0]
        leg = FakeLeg(target, kwargs)
        self.legs.append(leg)
        leg.run(user, kwargs.get("ring_timeout", 120))
        return leg

    def leg(self, call_uuid: str) -> FakeLeg:
        return next(leg for leg in self.legs if leg.uuid == call_uuid)


# --- a real webhook receiver ----------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float


class Receiver:
    """An HTTP server that records every callback and checks its V3 signature."""

    ANSWER_XML = '<?xml version="1.0"?><Response><Speak>hello</Speak></Response>'

    def __init__(self, auth_token: str = AUTH_TOKEN, port: int = 0) -> None:
        self.auth_token = auth_token
        self.port = port
        self.hits: list[Hit] = []
        self.fail: dict[str, int] = {}  # path -> how many more requests get a 503
        self.bad_signatures: list[Hit] = []
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        else:
            params = dict(request.query)
        url = str(request.url)
        hit = Hit(request.path, request.method, url, params, dict(request.headers), time.time())
        if not self._valid(hit):
            self.bad_signatures.append(hit)
        if self.fail.get(request.path, 0) > 0:
            self.fail[request.path] -= 1
            return web.Response(status=503, text="down")
        self.hits.append(hit)
        self._changed.set()
        if request.path.startswith("/answer") or request.path.startswith("/fallback"):
            return web.Response(text=self.ANSWER_XML, content_type="application/xml")
        return web.Response(text="ok")

    def _valid(self, hit: Hit) -> bool:
        sig = hit.headers.get("X-Plivo-Signature-V3")
        nonce = hit.headers.get("X-Plivo-Signature-V3-Nonce")
        if not sig or not nonce:
            return False
        if hit.method == "GET":
            base = hit.url.split("?", 1)[0]
            return validate_v3_signature("GET", base, nonce, self.auth_token, sig, dict(hit.params))
        return validate_v3_signature("POST", hit.url, nonce, self.auth_token, sig, dict(hit.params))

    def events(self, call_uuid: str | None = None, path: str | None = None) -> list[Hit]:
        return [
            h for h in self.hits
            if (call_uuid is None or h.params.get("CallUUID") == call_uuid)
            and (path is None or h.path == path)
        ]

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while True:
            found = [h for h in self.hits if pred(h)]
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching callback within {timeout}s; got {[(h.path, h.params.get('Event')) for h in self.hits]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    async def wait_hangup(self, call_uuid: str | None = None, request_uuid: str | None = None, timeout: float = 5.0) -> Hit:
        hits = await self.wait_for(
            lambda h: h.params.get("Event") == "Hangup"
            and (call_uuid is None or h.params.get("CallUUID") == call_uuid)
            and (request_uuid is None or h.params.get("RequestUUID") == request_uuid),
            timeout,
        )
        return hits[0]


# --- fixtures ---------------------------------------------------------------------------------------


def make_config(tmp_path: Any, **over: Any) -> Config:
    limits = over.pop("limits", Limits(cps=100.0, max_concurrent=100, max_queue=100, bulk_max=1000))
    cfg = Config(
        http_host="127.0.0.1",
        http_port=0,
        sip_host="127.0.0.1",
        sip_port=0,
        db_path=str(tmp_path / "calls.db"),
        data_dir=str(tmp_path / "data"),
        accounts=[Account(AUTH_ID, AUTH_TOKEN, "main"), Account(OTHER_ID, OTHER_TOKEN, "other")],
        limits=limits,
        drain_timeout_s=2.0,
        webhook_timeout_s=2.0,
        webhook_retries=12,
        webhook_backoff_s=0.05,
        webhook_backoff_max_s=0.3,
        answer_url_attempts=3,
        answer_url_deadline_s=10.0,
    )
    for key, value in over.items():
        setattr(cfg, key, value)
    return cfg


def sdk_client(base_url: str, auth_id: str = AUTH_ID, token: str = AUTH_TOKEN) -> plivo.RestClient:
    """The official SDK pointed at us. The supported override is the module constants the
    client reads on every voice request (``API_VOICE_BASE_URI`` and its two fallbacks)."""
    return plivo.RestClient(auth_id, token)


def point_sdk_at(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """Point the SDK at ``base_url``: voice requests read these module constants each time."""
    root = f"{base_url}/v1/Account"
    for name in ("API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1", "API_VOICE_BASE_URI_FALLBACK_2",
                 "PLIVO_API_BASE_URI"):
        monkeypatch.setattr(plivo_client, name, root)


@pytest.fixture
def sdk_base(monkeypatch: pytest.MonkeyPatch) -> Any:
    return lambda base_url: point_sdk_at(monkeypatch, base_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@dataclass
class Env:
    server: Server
    dialer: FakeDialer
    client: plivo.RestClient
    base: str

    async def sdk(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
async def env(tmp_path: Any, sdk_base: Any) -> AsyncIterator[Env]:
    dialer = FakeDialer()
    server = Server(make_config(tmp_path), dialer=dialer)
    await server.start()
    sdk_base(server.base_url)
    e = Env(server, dialer, sdk_client(server.base_url), server.base_url)
    try:
        yield e
    finally:
        await server.stop(mode="hangup", drain_timeout_s=1.0)


def basic(auth_id: str = AUTH_ID, token: str = AUTH_TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{auth_id}:{token}".encode()).decode()}


def sig_ok(receiver: Receiver) -> None:
    assert not receiver.bad_signatures, [(h.path, h.headers) for h in receiver.bad_signatures]


COMMON = ("From", "To", "RequestUUID", "ALegRequestUUID", "CallUUID", "ALegUUID", "Direction",
          "Event", "CallStatus", "SessionStart", "STIRAttestation")


# --- tests: make a call ---------------------------------------------------------------------------------


async def test_sdk_call_fires_all_callbacks_signed(env: Env, receiver: Receiver) -> None:
    resp = await env.sdk(
        env.client.calls.create,
        from_="+14155550100",
        to_="sip:bye3@127.0.0.1:5999",
        answer_url=receiver.url("/answer"),
        answer_method="GET",
        ring_url=receiver.url("/ring"),
        hangup_url=receiver.url("/hangup"),
        caller_name="Alice Example",
        sip_headers="Foo=bar,Acct=42",
        send_digits="1w2@100",
    )
    assert resp.message == "call fired"
    assert isinstance(resp.request_uuid, str) and len(resp.request_uuid) == 36
    assert resp.api_id
    hang = await receiver.wait_hangup(request_uuid=resp.request_uuid)
    call_uuid = hang.params["CallUUID"]
    ring = receiver.events(call_uuid, "/ring")
    answer = receiver.events(call_uuid, "/answer")
    assert len(ring) == 1 and len(answer) == 1 and len(receiver.events(call_uuid, "/hangup")) == 1
    for hit in (ring[0], answer[0], hang):
        for key in COMMON:
            assert key in hit.params, (hit.path, key)
        assert hit.params["From"] == "+14155550100"
        assert hit.params["To"] == "sip:bye3@127.0.0.1:5999"
        assert hit.params["RequestUUID"] == resp.request_uuid == hit.params["ALegRequestUUID"]
        assert hit.params["ALegUUID"] == call_uuid
        assert hit.params["Direction"] == "outbound"
        assert hit.params["X-PH-Foo"] == "bar" and hit.params["X-PH-Acct"] == "42"
    assert ring[0].method == "POST" and ring[0].params["Event"] == "Ring"
    assert ring[0].params["CallStatus"] == "ringing"
    assert answer[0].method == "GET" and answer[0].params["Event"] == "StartApp"
    assert answer[0].params["CallStatus"] == "in-progress"
    p = hang.params
    assert p["Event"] == "Hangup" and p["CallStatus"] == "completed"
    assert p["HangupCause"] == "NORMAL_CLEARING" and p["HangupSource"] == "Callee"
    assert p["HangupCauseCode"] == "4000" and p["HangupCauseName"] == "Normal Hangup"
    assert int(p["Duration"]) >= 0 and int(p["BillDuration"]) >= 1
    for key in ("StartTime", "AnswerTime", "EndTime"):
        time.strptime(p[key], "%Y-%m-%d %H:%M:%S")
    assert ring[0].at <= answer[0].at <= hang.at
    sig_ok(receiver)
    leg = env.dialer.leg(call_uuid)
    assert leg.kwargs["caller_name"] == "Alice Example"
    assert leg.kwargs["headers"] == {"X-PH-Foo": "bar", "X-PH-Acct": "42"}
    assert leg.kwargs["from_user"] == "+14155550100"
    assert leg.kwargs["ring_timeout"] == 120
    assert leg.digits == [("1w2@100", 250)]
    # the record, through the SDK
    rec = await env.sdk(env.client.calls.get, call_uuid)
    assert rec.call_uuid == call_uuid and rec.call_status == "completed"
    assert rec.from_number == "+14155550100" and rec.to_number == "sip:bye3@127.0.0.1:5999"
    assert rec.hangup_source == "Callee" and rec.hangup_cause_code == 4000
    assert rec.call_direction == "outbound" and rec.answer_time and rec.end_time
    assert rec.bill_duration >= 1
    # the StartApp fetch and the posts are recorded by the outbox
    kinds = [(d.event, d.status) for d in env.server.outbox.deliveries(call_uuid)]
    assert ("answer", "delivered") in kinds and ("hangup", "delivered") in kinds


async def test_json_and_form_bodies_raw_http(env: Env, receiver: Receiver) -> None:
    url = f"{env.base}/v1/Account/{AUTH_ID}/Call/"
    async with aiohttp.ClientSession(headers=basic()) as s:
        form = {"from": "1000", "to": "sip:bye1@127.0.0.1", "answer_url": receiver.url("/answer"),
                "hangup_url": receiver.url("/hangup"), "answer_method": "POSt", "time_limit": "300"}
        async with s.post(url, data=form) as r:
            assert r.status == 201
            body = await r.json()
            assert body["message"] == "call fired" and body["api_id"]
        # curl -d '{...}' sends JSON as a form content type: the seed's own example
        async with s.post(url, data=json.dumps({**form, "to": "sip:bye1@127.0.0.2"}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 201
        async with s.post(url.rstrip("/"), json={**form, "to": "sip:bye1@127.0.0.3"}) as r:
            assert r.status == 201, await r.text()
    await receiver.wait_hangup(request_uuid=body["request_uuid"])
    sig_ok(receiver)


async def test_bulk_call_three_destinations(env: Env, receiver: Receiver) -> None:
    to = "sip:bye2@127.0.0.1:5001<sip:bye2@127.0.0.1:5002<sip:bye2@127.0.0.1:5003<sip:bye2@127.0.0.1:5001"
    resp = await env.sdk(env.client.calls.create, from_="1000", to_=to, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"))
    assert resp.message == "call fired"
    assert isinstance(resp.request_uuid, list) and len(resp.request_uuid) == 3  # duplicates dropped
    hits = [await receiver.wait_hangup(request_uuid=r) for r in resp.request_uuid]
    assert sorted(h.params["To"] for h in hits) == [f"sip:bye2@127.0.0.1:500{i}" for i in (1, 2, 3)]
    assert all(h.params["CallStatus"] == "completed" for h in hits)
    assert len({h.params["CallUUID"] for h in hits}) == 3
    sig_ok(receiver)


# --- tests: bad requests ------------------------------------------------------------------------------------


async def test_bad_requests_status_and_error(env: Env, receiver: Receiver) -> None:
    url = f"{env.base}/v1/Account/{AUTH_ID}/Call/"
    ok = {"from": "1000", "to": "sip:bob@127.0.0.1", "answer_url": receiver.url("/answer")}
    cases = [
        ({k: v for k, v in ok.items() if k != "to"}, 400, "to"),
        ({k: v for k, v in ok.items() if k != "from"}, 400, "from"),
        ({k: v for k, v in ok.items() if k != "answer_url"}, 400, "answer_url"),
        ({**ok, "answer_url": "ftp://example.com/x"}, 400, "answer_url"),
        ({**ok, "answer_url": "not a url"}, 400, "answer_url"),
        ({**ok, "hangup_url": "http//broken"}, 400, "hangup_url"),
        ({**ok, "caller_name": "x" * 51}, 400, "caller_name"),
        ({**ok, "to": "<".join(str(15550000000 + i) for i in range(1001))}, 400, "to"),
        ({**ok, "to": "sip:"}, 400, "to"),
        ({**ok, "time_limit": "0"}, 400, "time_limit"),
        ({**ok, "time_limit": "abc"}, 400, "time_limit"),
        ({**ok, "ring_timeout": "-5"}, 400, "ring_timeout"),
        ({**ok, "hangup_on_ring": "0"}, 400, "hangup_on_ring"),
        ({**ok, "machine_detection": "maybe"}, 400, "machine_detection"),
        ({**ok, "machine_detection_time": "1999"}, 400, "machine_detection_time"),
        ({**ok, "machine_detection_time": "10001"}, 400, "machine_detection_time"),
        ({**ok, "sip_headers": "a=b=c"}, 400, "sip_headers"),
        ({**ok, "sip_headers": "bad key=v"}, 400, "sip_headers"),
        ({**ok, "send_digits": "12x"}, 400, "send_digits"),
        ({**ok, "send_digits": "12@10"}, 400, "send_digits"),
        ({**ok, "answer_method": "PUT"}, 400, "answer_method"),
        ({**ok, "send_on_preanswer": "maybe"}, 400, "send_on_preanswer"),
        ({**ok, "parent_call_uuid": "nope"}, 400, "parent_call_uuid"),
        ({**ok, "parent_call_uuid": "11111111-2222-3333-4444-555555555555",
          "error_if_parent_not_found": "true"}, 404, "parent_call_uuid"),
    ]
    async with aiohttp.ClientSession(headers=basic()) as s:
        for body, status, name in cases:
            async with s.post(url, json=body) as r:
                data = await r.json()
                assert r.status == status, (body, data)
                assert set(data) == {"api_id", "error"}
                assert name in data["error"], (name, data)
        async with s.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with s.put(url, json=ok) as r:
            assert r.status == 405 and set(await r.json()) == {"api_id", "error"}
        async with s.get(f"{env.base}/v1/Account/{AUTH_ID}/Call/{'0' * 8}-0000-0000-0000-{'0' * 12}/") as r:
            assert r.status == 404 and "error" in await r.json()
        async with s.get(f"{env.base}/v1/Account/{AUTH_ID}/Nothing/") as r:
            assert r.status == 404 and "error" in await r.json()
    for headers in (basic(AUTH_ID, "wrong"), basic("MAZZZZZZZZZZZZZZZZZZ", AUTH_TOKEN),
                    basic(OTHER_ID, OTHER_TOKEN), {"Authorization": "Basic !!!"}, {}):
        async with aiohttp.ClientSession(headers=headers) as s, s.post(url, json=ok) as r:
            assert r.status == 401
            assert set(await r.json()) == {"api_id", "error"}
    assert env.dialer.legs == []  # nothing was dialed


async def test_bad_requests_through_sdk(env: Env, receiver: Receiver) -> None:
    c = env.client
    with pytest.raises(plivo_exc.ValidationError, match="caller_name"):
        await env.sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/a"),
                      caller_name="y" * 51)
    many = "<".join(str(15550000000 + i) for i in range(1001))
    with pytest.raises(plivo_exc.ValidationError, match="1000"):
        await env.sdk(c.calls.create, from_="1000", to_=many, answer_url=receiver.url("/a"))
    with pytest.raises(plivo_exc.ValidationError, match="to"):
        await env.sdk(c.calls.create, from_="1000", to_="sip:", answer_url=receiver.url("/a"))
    wrong = plivo.RestClient(AUTH_ID, "not-the-token")
    with pytest.raises(plivo_exc.AuthenticationError):
        await env.sdk(wrong.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/a"))
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.get, "11111111-2222-3333-4444-555555555555")
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.delete, "11111111-2222-3333-4444-555555555555")
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.calls.cancel, "11111111-2222-3333-4444-555555555555")


# --- tests: records, live calls, hangup, cancel ----------------------------------------------------------------


async def test_live_calls_and_api_hangup(env: Env, receiver: Receiver) -> None:
    c = env.client
    resp = await env.sdk(c.calls.create, from_="1000", to_="sip:answer@127.0.0.1", answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"), ring_url=receiver.url("/ring"))
    hits = await receiver.wait_for(lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid)
    call_uuid = hits[0].params["CallUUID"]
    live = await env.sdk(c.live_calls.list_ids)
    assert call_uuid in live.calls and live.api_id
    one = await env.sdk(c.live_calls.get, call_uuid)
    assert one.call_uuid == call_uuid and one.call_status == "in-progress"
    assert one.direction == "outbound" and one.to == "sip:answer@127.0.0.1" and getattr(one, "from") == "1000"
    rec = await env.sdk(c.calls.get, call_uuid)
    assert rec.call_status == "in-progress" and rec.end_time is None
    # the other account sees nothing of it
    other = plivo.RestClient(OTHER_ID, OTHER_TOKEN)
    assert call_uuid not in (await env.sdk(other.live_calls.list_ids)).calls
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(other.calls.get, call_uuid)
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(other.calls.delete, call_uuid)
    assert (await env.sdk(other.calls.list)).meta.total_count == 0
    # hang up through the API
    await env.sdk(c.calls.delete, call_uuid)
    hang = await receiver.wait_hangup(call_uuid)
    assert hang.params["CallStatus"] == "completed" and hang.params["HangupSource"] == "API Request"
    assert hang.params["HangupCause"] == "NORMAL_CLEARING"
    assert call_uuid not in (await env.sdk(c.live_calls.list_ids)).calls
    with pytest.raises(plivo_exc.ResourceNotFoundError):
        await env.sdk(c.live_calls.get, call_uuid)
    rec = await env.sdk(c.calls.get, call_uuid)
    assert rec.call_status == "completed" and rec.hangup_source == "API Request"
    await asyncio.sleep(0.1)
    assert len(receiver.events(call_uuid, "/hangup")) == 1
    sig_ok(receiver)


async def test_hangup_and_cancel_ringing_calls(env: Env, receiver: Receiver) -> None:
    c = env.client
    a = await env.sdk(c.calls.create, from_="1000", to_="sip:ring@127.0.0.1", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"), ring_url=receiver.url("/ring"))
    b = await env.sdk(c.calls.create, from_="1000", to_="sip:ring@127.0.0.2", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"), ring_url=receiver.url("/ring"))
    ring_a = (await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == a.request_uuid))[0]
    await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == b.request_uuid)
    live = await env.sdk(c.live_calls.get, ring_a.params["CallUUID"])
    assert live.call_status == "ringing"
    await env.sdk(c.calls.delete, ring_a.params["CallUUID"])  # DELETE Call/{uuid}/ on a ringing call
    await env.sdk(c.calls.cancel, b.request_uuid)  # DELETE Request/{uuid}/
    for req in (a.request_uuid, b.request_uuid):
        hang = await receiver.wait_hangup(request_uuid=req)
        assert hang.params["CallStatus"] == "cancel"
        assert hang.params["HangupCause"] == "ORIGINATOR_CANCEL"
        assert hang.params["HangupSource"] == "API Request"
        assert hang.params["HangupCauseName"] == "Canceled" and hang.params["HangupCauseCode"] == "1000"
        assert hang.params["AnswerTime"] == "" and hang.params["Duration"] == "0"
    assert not receiver.events(path="/answer")
    sig_ok(receiver)


async def test_list_calls_paging_and_filters(env: Env, receiver: Receiver) -> None:
    c = env.client
    reqs = []
    for i in range(5):
        r = await env.sdk(c.calls.create, from_="1000", to_=f"sip:bye0@127.0.0.{i + 1}",
                          answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        reqs.append(r.request_uuid)
    b = await env.sdk(c.calls.create, from_="1000", to_="sip:busy@127.0.0.9",
                      answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    for r in [*reqs, b.request_uuid]:
        await receiver.wait_hangup(request_uuid=r)
    page = await env.sdk(c.calls.list, limit=2, offset=0)
    assert page.meta.total_count == 6 and page.meta.limit == 2 and page.meta.offset == 0
    assert page.meta.next and "offset=2" in page.meta.next and page.meta.previous is None
    assert len(page.objects) == 2 and all(o.call_uuid for o in page.objects)
    last = await env.sdk(c.calls.list, limit=2, offset=4)
    assert len(last.objects) == 2 and last.meta.next is None and last.meta.previous
    busy = await env.sdk(c.calls.list, to_number="sip:busy@127.0.0.9")
    assert [o.call_status for o in busy.objects] == ["busy"]
    assert busy.objects[0].hangup_cause_name == "Busy Line"
    hang = receiver.events(path="/hangup")
    assert any(h.params["CallStatus"] == "busy" and h.params["HangupCause"] == "USER_BUSY" for h in hang)
    # the SDK walks every page by itself
    walked = await asyncio.to_thread(lambda: [o.call_uuid for o in env.client.calls])
    assert len(walked) == 6 and len(set(walked)) == 6
    with pytest.raises(plivo_exc.ValidationError):
        await env.sdk(c.calls.list, hangup_cause_code=4000, end_time__gt="not a time")
    # a record is also reachable by its request uuid
    rec = await env.sdk(c.calls.get, b.request_uuid)
    assert rec.call_status == "busy"


async def test_cps_gate_queues_calls(tmp_path: Any, sdk_base: Any, receiver: Receiver) -> None:
    dialer = FakeDialer()
    cfg = make_config(tmp_path, limits=Limits(cps=1.0, max_concurrent=100, max_queue=3, bulk_max=1000))
    async with Server(cfg, dialer=dialer) as server:
        sdk_base(server.base_url)
        c = sdk_client(server.base_url)
        to = "<".join(f"sip:bye0@127.0.0.{i}" for i in range(1, 4))
        first = await asyncio.to_thread(c.calls.create, from_="1000", to_=to, answer_url=receiver.url("/answer"),
                                        hangup_url=receiver.url("/hangup"))
        assert first.message == "call queued"  # three calls, one token: two wait, 1 s apart
        queued = await asyncio.to_thread(c.queued_calls.list_ids)
        assert 1 <= len(queued.calls) <= 2
        q = await asyncio.to_thread(c.queued_calls.get, queued.calls[-1])
        assert q.call_status == "queued"
        async with aiohttp.ClientSession(headers=basic()) as s:
            body = {"from": "1000", "to": "<".join(f"sip:bye0@127.0.1.{i}" for i in range(1, 5)),
                    "answer_url": receiver.url("/answer")}
            async with s.post(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/", json=body) as r:
                assert r.status == 429 and "error" in await r.json()
        for r in first.request_uuid:
            await receiver.wait_hangup(request_uuid=r)
        starts = sorted(leg_dial_times(dialer))
        assert starts[2] - starts[0] >= 1.5  # the third call went out ~2 s after the first
        await server.stop(drain_timeout_s=1.0)


def leg_dial_times(dialer: FakeDialer) -> list[float]:
    return [leg._events[0].at for leg in dialer.legs]


# --- tests: timers ---------------------------------------------------------------------------------------


async def test_time_limit_ring_timeout_hangup_on_ring(env: Env, receiver: Receiver) -> None:
    c = env.client
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup")}
    tl = await env.sdk(c.calls.create, to_="sip:answer@127.0.0.1", time_limit=1, **common)
    rt = await env.sdk(c.calls.create, to_="sip:ring@127.0.0.2", ring_timeout=1, **common)
    hr = await env.sdk(c.calls.create, to_="sip:ring@127.0.0.3", hangup_on_ring=1, **common)
    p = (await receiver.wait_hangup(request_uuid=tl.request_uuid, timeout=5)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "ALLOTTED_TIMEOUT", "Plivo")
    assert p["HangupCauseName"] == "Max Call Duration Reached" and int(p["BillDuration"]) >= 1
    p = (await receiver.wait_hangup(request_uuid=rt.request_uuid, timeout=5)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("no-answer", "NO_ANSWER", "Plivo")
    assert p["HangupCauseName"] == "Ring Timeout Reached"
    leg = next(leg for leg in env.dialer.legs if leg.target == "sip:ring@127.0.0.2")
    assert leg.kwargs["ring_timeout"] == 1
    p = (await receiver.wait_hangup(request_uuid=hr.request_uuid, timeout=5)).params
    assert (p["CallStatus"], p["HangupSource"]) == ("no-answer", "Plivo")
    sig_ok(receiver)


async def test_send_on_preanswer_and_unroutable(env: Env, receiver: Receiver) -> None:
    c = env.client
    r = await env.sdk(c.calls.create, from_="1000", to_="sip:early@127.0.0.1", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"), send_digits="123", send_on_preanswer=True)
    hit = (await receiver.wait_for(lambda h: h.path == "/answer" and h.params["RequestUUID"] == r.request_uuid))[0]
    leg = env.dialer.leg(hit.params["CallUUID"])
    assert leg.digits == [("123", 250)]  # sent once, on early media
    rec = await env.sdk(c.calls.get, hit.params["CallUUID"])
    assert rec.call_status == "in-progress" and rec.ring_time
    n = await env.sdk(c.calls.create, from_="1000", to_="14155550123", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
    p = (await receiver.wait_hangup(request_uuid=n.request_uuid)).params
    assert p["CallStatus"] == "failed" and p["HangupCause"] == "NO_ROUTE_DESTINATION"
    assert p["HangupSource"] == "Error" and p["HangupCauseName"] == "Invalid Destination Address"


# --- tests: answer_url retries and fallback, receiver down then up -----------------------------------------------


async def test_answer_url_retries_then_fallback(env: Env, receiver: Receiver) -> None:
    receiver.fail["/answer"] = 99
    r = await env.sdk(env.client.calls.create, from_="1000", to_="sip:answer@127.0.0.1",
                      answer_url=receiver.url("/answer"), fallback_url=receiver.url("/fallback"),
                      fallback_method="GET", hangup_url=receiver.url("/hangup"))
    hit = (await receiver.wait_for(lambda h: h.path == "/fallback" and h.params["RequestUUID"] == r.request_uuid))[0]
    assert hit.method == "GET" and hit.params["Event"] == "StartApp"
    assert receiver.fail["/answer"] == 99 - 3  # exactly three attempts at answer_url
    call_uuid = hit.params["CallUUID"]
    rec = await env.sdk(env.client.calls.get, call_uuid)
    assert rec.call_status == "in-progress"  # held: no XML interpreter yet
    # and when neither answers, the call is hung up as an error
    receiver.fail["/fallback"] = 99
    r2 = await env.sdk(env.client.calls.create, from_="1000", to_="sip:answer@127.0.0.2",
                       answer_url=receiver.url("/answer"), fallback_url=receiver.url("/fallback"),
                       hangup_url=receiver.url("/hangup"))
    p = (await receiver.wait_hangup(request_uuid=r2.request_uuid, timeout=8)).params
    assert p["HangupSource"] == "Error" and p["CallStatus"] == "completed"
    sig_ok(receiver)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_receiver_down_then_up_gets_every_callback(env: Env) -> None:
    port = _free_port()
    late = Receiver(port=port)
    r = await env.sdk(env.client.calls.create, from_="1000", to_="sip:bye1@127.0.0.1",
                      answer_url=f"http://127.0.0.1:{port}/answer", ring_url=f"http://127.0.0.1:{port}/ring",
                      hangup_url=f"http://127.0.0.1:{port}/hangup")
    # nobody listens: the call still rings, answers (answer_url fails -> hung up as error) and is recorded
    deadline = time.monotonic() + 5
    rec = None
    while time.monotonic() < deadline:
        rec = env.server.store.get_call_by_request(AUTH_ID, r.request_uuid)
        if rec and rec["end_time"]:
            break
        await asyncio.sleep(0.05)
    assert rec is not None and rec["end_time"] and rec["call_status"] == "completed"
    await late.start()  # the receiver comes up: the outbox's retries reach it, in order
    try:
        hang = await late.wait_hangup(request_uuid=r.request_uuid, timeout=8)
        ring = late.events(hang.params["CallUUID"], "/ring")
        assert len(ring) == 1 and ring[0].at <= hang.at
        assert len(late.events(hang.params["CallUUID"], "/hangup")) == 1
        sig_ok(late)
    finally:
        await late.stop()


async def test_flaky_receiver_retried_in_order(env: Env, receiver: Receiver) -> None:
    receiver.fail["/ring"] = 2
    receiver.fail["/hangup"] = 2
    r = await env.sdk(env.client.calls.create, from_="1000", to_="sip:bye1@127.0.0.1",
                      answer_url=receiver.url("/answer"), ring_url=receiver.url("/ring"),
                      hangup_url=receiver.url("/hangup"))
    hang = await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=8)
    ring = receiver.events(hang.params["CallUUID"], "/ring")
    assert len(ring) == 1 and ring[0].at <= hang.at
    sig_ok(receiver)


# --- tests: restart and shutdown ---------------------------------------------------------------------------


async def test_records_survive_restart(tmp_path: Any, sdk_base: Any, receiver: Receiver) -> None:
    cfg = make_config(tmp_path)
    dialer = FakeDialer()
    async with Server(cfg, dialer=dialer) as server:
        sdk_base(server.base_url)
        c = sdk_client(server.base_url)
        done = await asyncio.to_thread(c.calls.create, from_="1000", to_="sip:bye0@127.0.0.1",
                                       answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        done_uuid = (await receiver.wait_hangup(request_uuid=done.request_uuid)).params["CallUUID"]
        held = await asyncio.to_thread(c.calls.create, from_="1000", to_="sip:answer@127.0.0.2",
                                       answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
        held_uuid = (await receiver.wait_for(lambda h: h.path == "/answer"
                                             and h.params["RequestUUID"] == held.request_uuid))[0].params["CallUUID"]
        await server.stop(mode="hangup")  # graceful: live calls hung up, callbacks flushed
    p = (await receiver.wait_hangup(held_uuid)).params
    assert p["HangupCause"] == "SYSTEM_SHUTDOWN" and p["HangupSource"] == "Plivo"
    async with Server(cfg, dialer=FakeDialer()) as server2:
        sdk_base(server2.base_url)
        c2 = sdk_client(server2.base_url)
        a = await asyncio.to_thread(c2.calls.get, done_uuid)
        b = await asyncio.to_thread(c2.calls.get, held_uuid)
        assert a.call_status == "completed" and a.hangup_source == "Callee"
        assert b.call_status == "completed" and b.hangup_source == "Plivo"
        assert (await asyncio.to_thread(c2.calls.list)).meta.total_count == 2
        assert (await asyncio.to_thread(c2.live_calls.list_ids)).calls == []


async def test_shutdown_refuses_new_calls_and_drains(tmp_path: Any, sdk_base: Any, receiver: Receiver) -> None:
    cfg = make_config(tmp_path)
    server = Server(cfg, dialer=FakeDialer())
    await server.start()
    sdk_base(server.base_url)
    c = sdk_client(server.base_url)
    r = await asyncio.to_thread(c.calls.create, from_="1000", to_="sip:bye5@127.0.0.1",
                                answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    await receiver.wait_for(lambda h: h.path == "/answer")
    stopping = asyncio.create_task(server.stop(mode="drain", drain_timeout_s=3.0))
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(headers=basic()) as s:
        body = {"from": "1000", "to": "sip:bob@127.0.0.1", "answer_url": receiver.url("/answer")}
        async with s.post(f"{server.base_url}/v1/Account/{AUTH_ID}/Call/", json=body) as resp:
            assert resp.status == 503 and "error" in await resp.json()
    await stopping
    p = (await receiver.wait_hangup(request_uuid=r.request_uuid)).params
    assert p["HangupSource"] == "Callee"  # drained: the callee ended it, not the shutdown


async def test_openapi_document(env: Env) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{env.base}/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    props = doc["components"]["schemas"]["MakeCall"]["properties"]
    for name in ("from", "to", "answer_url", "answer_method", "ring_url", "ring_method", "hangup_url",
                 "hangup_method", "fallback_url", "fallback_method", "caller_name", "send_digits",
                 "send_on_preanswer", "time_limit", "hangup_on_ring", "machine_detection",
                 "machine_detection_time", "machine_detection_url", "machine_detection_method", "sip_headers",
                 "ring_timeout", "parent_call_uuid", "error_if_parent_not_found"):
        assert name in props
    assert props["time_limit"]["default"] == 14400 and props["ring_timeout"]["default"] == 120
    assert props["caller_name"]["maxLength"] == 50
    paths = doc["paths"]
    assert set(paths["/v1/Account/{auth_id}/Call/"]) == {"post", "get"}
    assert set(paths["/v1/Account/{auth_id}/Call/{call_uuid}/"]) == {"get", "delete"}
    assert "delete" in paths["/v1/Account/{auth_id}/Request/{request_uuid}/"]


# --- unit tests of the dialect ------------------------------------------------------------------------------


def test_parse_defaults_and_ranges() -> None:
    req = parse_call_request({"from": "+14155550100", "to": "14155550101", "answer_url": "https://x.example/a"})
    assert req.answer_method == "POST" and req.time_limit == 14400 and req.ring_timeout == 120
    assert req.machine_detection is None and req.machine_detection_time == 5000
    assert req.send_on_preanswer is False and req.error_if_parent_not_found is False
    req = parse_call_request({"from": "1000", "to": "sip:a@h", "answer_url": "http://h/a", "time_limit": 999999,
                              "machine_detection": "hangup", "machine_detection_time": "2000",
                              "send_on_preanswer": "true", "ring_timeout": "30", "hangup_on_ring": 5})
    assert req.time_limit == 86400  # capped at 24 h
    assert req.machine_detection == "hangup" and req.machine_detection_time == 2000
    assert req.send_on_preanswer is True and req.ring_timeout == 30 and req.hangup_on_ring == 5
    req = parse_call_request({"from": "1000", "to": "+1555000<1555000<sip:b@h<b@h:5070", "answer_url": "http://h/a"})
    assert req.to == ("+1555000", "sip:b@h", "b@h:5070")
    with pytest.raises(ApiError, match="overlap"):
        parse_call_request({"from": "1555", "to": "+1555", "answer_url": "http://h/a"})
    with pytest.raises(ApiError, match="at most 3"):
        parse_call_request({"from": "1", "to": "<".join(f"sip:u{i}@h" for i in range(4)), "answer_url": "http://h/a"},
                           bulk_max=3)
    assert len(parse_call_request({"from": "1", "to": "<".join(f"sip:u{i}@h" for i in range(1000)),
                                   "answer_url": "http://h/a"}).to) == 1000


def test_sip_headers() -> None:
    assert parse_sip_headers("head1=val1,head2=val2") == {"X-PH-head1": "val1", "X-PH-head2": "val2"}
    assert parse_sip_headers("") == {}
    for bad in ("novalue", "k=", "=v", "k=v v", "k=v;x", "k\r\nInjected=1"):
        with pytest.raises(ApiError, match="sip_headers"):
            parse_sip_headers(bad)


async def test_serve_runs_until_stopped(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = make_config(tmp_path)
    cfg.generated = True
    task = asyncio.create_task(serve(cfg, stop=stop, ready=ready, dialer=FakeDialer()))
    await asyncio.wait_for(ready.wait(), 10)
    err = capsys.readouterr().err
    assert "HTTP API on http://127.0.0.1:" in err
    assert f"auth_id={AUTH_ID} auth_token={AUTH_TOKEN}" in err
    stop.set()
    await asyncio.wait_for(task, 10)
