"""Answered calls run the Plivo XML their answer_url returns: the official SDK → softswitch
(real SIP user agent and media) → a real callee (sipp), with a real HTTP server serving the
XML and receiving the signed callbacks.

What is checked: a document runs to its ``<Hangup/>`` and the hangup callback comes; an
invalid answer document makes the call fetch and run fallback_url; when both are invalid
(not XML, unknown verb, bad attribute) the call ends with the XML error's cause, Plivo's
code, an ``error`` in the call record, and the hangup callback still comes; running out of
verbs is Plivo's "End Of XML Instructions"; an unreachable action URL ends the call too.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import plivo
import plivo.rest.client as plivo_client
import pytest
from aiohttp import web
from plivo.utils.signature_v3 import validate_v3_signature

from softswitch.config import Account, Config, Limits
from softswitch.server import Server
from tests.conftest import free_port

AUTH_ID = "MAXMLTESTACCOUNT0001"
AUTH_TOKEN = "xml-test-token-0123456789abcdef"

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

HELLO_HANGUP = "<Response><Speak>Hello</Speak><Hangup/></Response>"
HOLD = '<Response><Wait length="60"/></Response>'


# --- a web application: XML documents by path, every request recorded and signature-checked --


@dataclass
class Hit:
    path: str
    method: str
    params: dict[str, str]
    signed: bool
    at: float


class WebApp:
    """The user's web server: serves ``docs[path]`` (XML, or ``(status, body, type)``)."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.hits: list[Hit] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def start(self) -> WebApp:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        else:
            params = dict(request.query)
        sig = request.headers.get("X-Plivo-Signature-V3", "")
        nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
        url = str(request.url).split("?", 1)[0] if request.method == "GET" else str(request.url)
        signed = bool(sig and nonce) and validate_v3_signature(
            request.method, url, nonce, AUTH_TOKEN, sig, dict(params)
        )
        self.hits.append(Hit(request.path, request.method, params, signed, time.monotonic()))
        self._changed.set()
        doc = self.docs.get(request.path)
        if doc is None:
            return web.Response(text="ok")
        if isinstance(doc, tuple):
            status, body, ctype = doc
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, content_type=ctype)
            return web.Response(status=status, text=body, content_type=ctype)
        return web.Response(text=doc, content_type="application/xml")

    def of(self, path: str, call_uuid: str | None = None) -> list[Hit]:
        return [
            h
            for h in self.hits
            if h.path == path
            and (
                call_uuid is None
                or h.params.get("CallUUID", h.params.get("call_uuid")) == call_uuid
            )
        ]

    async def wait(
        self, path: str, *, call_uuid: str | None = None, timeout: float = 10.0, count: int = 1
    ) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(path, call_uuid)
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {path} request within {timeout}s; got {[(h.path, h.params.get('Event')) for h in self.hits]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass


# --- softswitch, pointed at by the official SDK ----------------------------------------------


def make_config(tmp_path: Path, **over: Any) -> Config:
    cfg = Config(
        http_host="127.0.0.1",
        http_port=0,
        sip_host="127.0.0.1",
        sip_port=0,
        rtp_port_min=41000,
        rtp_port_max=41999,
        db_path=str(tmp_path / "calls.db"),
        data_dir=str(tmp_path / "data"),
        accounts=[Account(AUTH_ID, AUTH_TOKEN, "main")],
        limits=Limits(cps=100.0, max_concurrent=100, max_queue=100, bulk_max=10),
        drain_timeout_s=2.0,
        webhook_timeout_s=2.0,
        webhook_retries=3,
        webhook_backoff_s=0.05,
        webhook_backoff_max_s=0.2,
        answer_url_attempts=1,
        answer_url_deadline_s=5.0,
    )
    for key, value in over.items():
        setattr(cfg, key, value)
    return cfg


@dataclass
class Env:
    server: Server
    client: plivo.RestClient
    web: WebApp

    async def sdk(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def record(self, call_uuid: str) -> dict[str, Any]:
        rec = self.server.store.get_call(AUTH_ID, call_uuid)
        assert rec is not None
        return rec

    async def call(self, to: str, **kw: Any) -> str:
        """Make a call with the SDK; return its CallUUID once answer_url was fetched."""
        kw.setdefault("answer_url", self.web.url("/answer"))
        kw.setdefault("hangup_url", self.web.url("/hangup"))
        resp = await self.sdk(self.client.calls.create, from_="1000", to_=to, **kw)
        assert resp.message == "call fired"
        hits = await self.web.wait(urlsplit(kw["answer_url"]).path, timeout=15)
        return hits[-1].params["CallUUID"]


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    webapp = await WebApp().start()
    server = Server(make_config(tmp_path))
    await server.start()
    root = f"{server.base_url}/v1/Account"
    for name in (
        "API_VOICE_BASE_URI",
        "API_VOICE_BASE_URI_FALLBACK_1",
        "API_VOICE_BASE_URI_FALLBACK_2",
        "PLIVO_API_BASE_URI",
    ):
        monkeypatch.setattr(plivo_client, name, root)
    try:
        yield Env(server, plivo.RestClient(AUTH_ID, AUTH_TOKEN), webapp)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)
        await webapp.stop()


class SippUas:
    """sipp's built-in UAS on a loopback port: answers, echoes RTP, waits for our BYE."""

    def __init__(self, workdir: Path, calls: int = 1) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "sipp",
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(calls),
                "-mi",
                "127.0.0.1",
                "-mp",
                str(free_port(pair=True)),
                "-rtp_echo",
                "-nostdin",
                "-timeout",
                "60s",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.15)

    @property
    def uri(self) -> str:
        return f"sip:callee@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[Any]:
    started: list[SippUas] = []

    def start(calls: int = 1) -> SippUas:
        peer = SippUas(tmp_path, calls)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


async def hangup_of(env: Env, call_uuid: str, timeout: float = 15.0) -> dict[str, str]:
    hits = await env.web.wait("/hangup", call_uuid=call_uuid, timeout=timeout)
    assert len(hits) == 1, "exactly one hangup callback"
    assert hits[0].signed, "the hangup callback carries a valid X-Plivo-Signature-V3"
    return hits[0].params


# --- the tests --------------------------------------------------------------------------------


async def test_speak_then_hangup_ends_the_call_with_the_hangup_callback(env: Env, uas: Any) -> None:
    env.web.docs["/answer"] = HELLO_HANGUP
    peer = uas()
    call_uuid = await env.call(peer.uri)
    answer = env.web.of("/answer", call_uuid)[0]
    assert answer.signed and answer.params["Event"] == "StartApp"
    hang = await hangup_of(env, call_uuid)
    assert hang["CallStatus"] == "completed"
    assert hang["HangupCause"] == "NORMAL_CLEARING"
    assert hang["HangupSource"] == "Answer XML"
    assert hang["HangupCauseCode"] == "4000"
    # "Hello" took some time to say before <Hangup/>: the call was up for it.
    assert int(hang["BillDuration"]) >= 1
    rec = env.record(call_uuid)
    assert rec["error"] is None
    assert rec["call_status"] == "completed"
    assert rec["extra"]["answer_xml"] == HELLO_HANGUP


async def test_end_of_xml_instructions(env: Env, uas: Any) -> None:
    env.web.docs["/answer"] = '<Response><Wait length="1"/></Response>'
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == ("4010", "End Of XML Instructions")
    assert hang["HangupSource"] == "Plivo"
    assert hang["HangupCause"] == "NORMAL_CLEARING"


async def test_invalid_answer_xml_runs_fallback_url(env: Env, uas: Any) -> None:
    env.web.docs["/answer"] = "this is not XML at all"
    env.web.docs["/fallback"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri, fallback_url=env.web.url("/fallback"))
    fb = await env.web.wait("/fallback", call_uuid=call_uuid)
    assert fb[0].signed and fb[0].params["CallUUID"] == call_uuid
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "NORMAL_CLEARING"
    assert hang["HangupSource"] == "Answer XML"
    assert env.record(call_uuid)["error"] is None


@pytest.mark.parametrize(
    ("answer", "fallback", "needle"),
    [
        ("not <xml", "<<<", "XML"),
        ("<Response><Dance/></Response>", "<Response><Speak>hi</Speak><Jump/></Response>", "Jump"),
        (
            '<Response><Speak loop="often">hi</Speak></Response>',
            '<Response><Wait length="lots"/></Response>',
            "length",
        ),
    ],
    ids=["not-xml", "unknown-verb", "bad-attribute"],
)
async def test_invalid_answer_and_fallback_end_the_call_with_the_xml_error(
    env: Env, uas: Any, answer: str, fallback: str, needle: str
) -> None:
    env.web.docs["/answer"] = answer
    env.web.docs["/fallback"] = fallback
    call_uuid = await env.call(uas().uri, fallback_url=env.web.url("/fallback"))
    await env.web.wait("/fallback", call_uuid=call_uuid)
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "INVALID_MSG_UNSPECIFIED"
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == ("8000", "Invalid Answer XML")
    assert hang["HangupSource"] == "Error"
    assert hang["CallStatus"] == "completed"
    rec = env.record(call_uuid)
    assert rec["error"] and needle in rec["error"], rec["error"]
    assert rec["hangup_cause_code"] == 8000
    # the SDK sees the end too
    cdr = await env.sdk(env.client.calls.get, call_uuid)
    assert cdr.hangup_cause == "INVALID_MSG_UNSPECIFIED" and cdr.hangup_source == "Error"


async def test_invalid_answer_without_fallback(env: Env, uas: Any) -> None:
    env.web.docs["/answer"] = "<Response><Speak>ok</Speak><Conference>room</Conference></Response>"
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    # valid Plivo XML this softswitch does not implement: refused before anything runs
    assert hang["HangupCause"] == "SERVICE_NOT_IMPLEMENTED"
    assert hang["HangupSource"] == "Error"
    assert "Conference" in env.record(call_uuid)["error"]


async def test_unreachable_action_url_ends_the_call(env: Env, uas: Any) -> None:
    dead = f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/gone"
    env.web.docs["/answer"] = f"<Response><Redirect>{dead}</Redirect></Response>"
    call_uuid = await env.call(uas().uri)
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupCause"] == "NORMAL_TEMPORARY_FAILURE"
    assert (hang["HangupCauseCode"], hang["HangupCauseName"]) == (
        "8021",
        "Error Reaching Action URL",
    )
    assert dead in env.record(call_uuid)["error"]


async def test_redirect_and_action_requests_are_signed_and_carry_call_params(
    env: Env, uas: Any
) -> None:
    env.web.docs["/answer"] = (
        f'<Response><Redirect method="GET">{env.web.url("/next")}</Redirect></Response>'
    )
    env.web.docs["/next"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri)
    nxt = (await env.web.wait("/next", call_uuid=call_uuid))[0]
    assert nxt.method == "GET" and nxt.signed
    assert nxt.params["CallStatus"] == "in-progress" and nxt.params["Direction"] == "outbound"
    assert "Event" not in nxt.params
    hang = await hangup_of(env, call_uuid)
    assert hang["HangupSource"] == "Answer XML"


async def test_xml_record_file_is_served_at_its_record_url(env: Env, uas: Any) -> None:
    # sipp echoes our RTP, so the recording holds the echo of what we say before <Record>.
    env.web.docs["/answer"] = (
        "<Response><Speak>Leave a message</Speak>"
        f'<Record maxLength="2" timeout="10" playBeep="true" fileFormat="wav" '
        f'action="{env.web.url("/recorded")}"/></Response>'
    )
    env.web.docs["/recorded"] = "<Response><Hangup/></Response>"
    call_uuid = await env.call(uas().uri)
    hit = (await env.web.wait("/recorded", call_uuid=call_uuid))[0]
    assert hit.signed
    url = hit.params["RecordUrl"]
    assert url.startswith(f"{env.server.base_url}/v1/Account/{AUTH_ID}/Recording/files/")
    assert url.endswith(f"{hit.params['RecordingID']}.wav")
    assert 1500 <= int(hit.params["RecordingDurationMs"]) <= 3000
    await hangup_of(env, call_uuid)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "audio/wav"
        body = await resp.read()
    assert body[:4] == b"RIFF" and len(body) > 8000 * 2  # 8 kHz 16-bit, over a second
    assert (Path(env.server.manager.data_dir) / "recordings" / url.rsplit("/", 1)[1]).is_file()  # type: ignore[union-attr]
