"""The HTTP edge of every dialect against a real in-process :class:`Server` and real
clients (aiohttp, raw sockets): hostile or broken input is a 4xx in the owning dialect's
error shape, never a 500; slow and vanishing clients; ``405`` with ``Allow``; ``HEAD``.

The legacy dialect (``/v0.1/``) answers body problems past authentication with HTTP 200
``{"Success": false, "Message"}``, as the framework does (DIALECTS.md §1.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.config import HttpSettings
from softswitch.server import Server
from tests.peers.plivo_api import AUTH_ID, basic, make_config

PLIVO = f"/v1/Account/{AUTH_ID}/Call/"
CALLAPI = f"/call/2012-04-24/Accounts/{AUTH_ID}/Calls.json"
TWILIO = f"/2010-04-01/Accounts/{AUTH_ID}/Calls.json"
LEGACY = "/v0.1/Call/"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cfg = make_config(tmp_path, http=HttpSettings(body_timeout_s=0.5, header_timeout_s=1.0))
    srv = Server(cfg)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(mode="hangup", drain_timeout_s=1.0)


async def fetch(
    server: Server,
    method: str,
    path: str,
    *,
    data: Any = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, Any, Any]:
    hdrs = {**(basic() if auth else {}), **(headers or {})}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.base_url + path, data=data, headers=hdrs) as r,
    ):
        body = await r.read()
        try:
            import json

            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body
        return r.status, parsed, r.headers


def plivo_shape(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"api_id", "error"}


def callapi_shape(body: Any) -> bool:
    return isinstance(body, dict) and {"code", "message", "more_info", "status"} <= set(body)


# --- no 500s -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "offset=9223372036854775808",
        "offset=-1",
        "limit=99999999999999999999999999",
        "bill_duration__gt=1e400",
        "bill_duration__gt=99999999999999999999999",
        "bill_duration=9223372036854775808",
        "hangup_cause_code=-9223372036854775809",
        "end_time__gt=9999999999999999-01-01",
    ],
)
async def test_plivo_list_out_of_range_integers_are_400(server: Server, query: str) -> None:
    status, body, _ = await fetch(server, "GET", f"{PLIVO}?{query}")
    assert status == 400 and plivo_shape(body), (status, body)


@pytest.mark.parametrize(
    "query",
    [
        "Page=9223372036854775808",
        "Page=922337203685477580",
        "PageSize=99999999999999999999",
        "Page=-1",
        "PageSize=0",
    ],
)
@pytest.mark.parametrize("base", [CALLAPI, TWILIO])
async def test_callapi_paging_out_of_range_is_400(server: Server, base: str, query: str) -> None:
    status, body, _ = await fetch(server, "GET", f"{base}?{query}")
    assert status == 400 and callapi_shape(body) and body["status"] == 400, (status, body)


BAD_BODIES = [
    pytest.param("[" * 100_000, "application/json", id="deep-array"),
    pytest.param('{"a":' * 100_000, "application/json", id="deep-object"),
    pytest.param(
        '{"from": "1", "time_limit": 99999999999999999999999}', "application/json", id="huge-int"
    ),
    pytest.param('{"from": "1", "time_limit": 1e400}', "application/json", id="huge-float"),
    pytest.param('{"from": NaN}', "application/json", id="nan"),
    pytest.param(b"\xff\xfe=\xff", "application/x-www-form-urlencoded", id="bad-utf8-form"),
    pytest.param("--xx\r\nbad", "multipart/form-data; boundary=xx", id="bad-multipart"),
    pytest.param("whatever", "multipart/form-data", id="multipart-no-boundary"),
    pytest.param(
        "a=1", "application/x-www-form-urlencoded; charset=no-such-charset", id="bad-charset"
    ),
]


@pytest.mark.parametrize(("body", "ctype"), BAD_BODIES)
async def test_bad_bodies_are_400_in_each_dialect(server: Server, body: Any, ctype: str) -> None:
    h = {"Content-Type": ctype}
    status, got, _ = await fetch(server, "POST", PLIVO, data=body, headers=h)
    assert status == 400 and plivo_shape(got), (status, got)
    status, got, _ = await fetch(server, "POST", CALLAPI, data=body, headers=h)
    assert status == 400 and callapi_shape(got), (status, got)
    status, got, _ = await fetch(server, "POST", LEGACY, data=body, headers=h)
    # past authentication the legacy framework answers 200 Success: false
    assert status == 200 and got["Success"] is False and got["Message"], (status, got)


async def test_multipart_form_is_read(server: Server) -> None:
    form = aiohttp.FormData()
    form.add_field("from", "1234")
    form.add_field("to", "5678")
    form.add_field("answer_url", "ftp://example.invalid/")
    form.add_field("file", b"x", filename="x.bin")  # forces multipart
    status, got, _ = await fetch(server, "POST", PLIVO, data=form)
    assert status == 400 and "answer_url" in got["error"], got  # the fields were read


# --- slow and vanishing clients --------------------------------------------------------------------


async def _raw(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert server.http_port is not None
    return await asyncio.open_connection("127.0.0.1", server.http_port)


def _head(path: str, length: int, ctype: str = "application/x-www-form-urlencoded") -> bytes:
    auth = basic()["Authorization"]
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("path", [PLIVO, CALLAPI, LEGACY])
async def test_half_sent_body_is_answered_408_and_closed(server: Server, path: str) -> None:
    reader, writer = await _raw(server)
    try:
        writer.write(_head(path, 100) + b"from=123")  # 8 of 100 bytes, then nothing
        await writer.drain()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # body_timeout_s is 0.5: the answer and the close come well within 3 s
        data = await asyncio.wait_for(reader.read(), timeout=3.0)  # read() returns at EOF
        elapsed = loop.time() - started
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert 0.4 <= elapsed < 2.5, elapsed


async def test_incomplete_request_head_is_closed(server: Server) -> None:
    reader, writer = await _raw(server)
    try:
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=4.0)  # header_timeout_s is 1.0
    finally:
        writer.close()
    assert data == b""


async def test_client_disconnecting_mid_body_is_a_debug_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="softswitch")
    reader, writer = await _raw(server)
    writer.write(_head(PLIVO, 1000, "application/json") + b'{"from": "1')
    await writer.drain()
    await asyncio.sleep(0.05)  # let the handler start reading the body
    writer.transport.abort()  # vanish mid-body (RST)
    await asyncio.sleep(0.2)
    # the server is fine and says nothing above DEBUG about it
    status, _, _ = await fetch(server, "GET", "/openapi.json", auth=False)
    assert status == 200
    noisy = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("softswitch")
    ]
    assert not noisy, [r.getMessage() for r in noisy]
    assert not any("Traceback" in (r.exc_text or "") for r in caplog.records)


# --- 405 with Allow, HEAD wherever GET -------------------------------------------------------------


def _routes(server: Server) -> dict[str, set[str]]:
    """Every routed path of the running app → its methods."""
    app = server.runner.app  # type: ignore[union-attr]
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path:
            out.setdefault(path, set()).add(route.method)
    return out


def _concrete(path: str) -> str:
    import re

    filled = path.replace("{auth_id}", AUTH_ID).replace(
        "{name}", "00000000-0000-4000-8000-000000000000.wav"
    )
    return re.sub(r"\{[A-Za-z_]+\}", "00000000-0000-4000-8000-000000000000", filled)


async def test_every_405_carries_allow(server: Server) -> None:
    routes = _routes(server)
    assert len(routes) > 20
    checked = 0
    for path, methods in routes.items():
        if "GET" in methods:
            assert "HEAD" in methods, path
        for probe in ("PUT", "PATCH", "DELETE", "POST", "GET"):
            if probe in methods:
                continue
            status, body, headers = await fetch(server, probe, _concrete(path))
            assert status == 405, (probe, path, status)
            allow = {m.strip() for m in headers["Allow"].split(",")}
            assert allow == methods, (path, allow, methods)
            assert isinstance(body, dict), body  # the dialect's error shape
            checked += 1
            break
    assert checked > 10


async def test_head_answers_like_get_on_every_get_route(server: Server) -> None:
    for path, methods in _routes(server).items():
        if "GET" not in methods:
            continue
        url = _concrete(path)
        get_status, _, get_headers = await fetch(server, "GET", url)
        async with (
            aiohttp.ClientSession() as s,
            s.head(server.base_url + url, headers=basic()) as r,
        ):
            assert r.status == get_status, (path, r.status, get_status)
            assert r.headers.get("Content-Type") == get_headers.get("Content-Type"), path
            assert await r.read() == b""


# --- authentication throttle -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        (PLIVO, plivo_shape),
        (CALLAPI, callapi_shape),
        (LEGACY, lambda b: isinstance(b, dict) and b.get("Success") is False),
    ],
)
async def test_failed_auth_is_throttled_per_source(tmp_path: Path, path: str, shape: Any) -> None:
    cfg = make_config(tmp_path, http=HttpSettings(auth_fail_limit=5, auth_fail_window_s=1.5))
    srv = Server(cfg)
    await srv.start()
    try:
        # a correct request is unaffected before any failure
        method = "POST" if path == LEGACY else "GET"
        status, _, _ = await fetch(srv, method, path)
        assert status == 200
        wrong = {"Authorization": basic(token="wrong-token")["Authorization"]}
        statuses = []
        for _ in range(8):
            status, body, headers = await fetch(srv, method, path, headers=wrong, auth=False)
            statuses.append(status)
        assert statuses == [401] * 5 + [429] * 3, statuses
        assert shape(body), body
        retry = int(headers["Retry-After"])
        assert 1 <= retry <= 2
        # blocked means blocked: the right token is refused too until the window ends
        status, _, _ = await fetch(srv, method, path)
        assert status == 429
        await asyncio.sleep(retry + 0.1)
        status, _, _ = await fetch(srv, method, path)
        assert status == 200
    finally:
        await srv.stop(mode="hangup", drain_timeout_s=1.0)


def test_throttle_table_is_bounded() -> None:
    from softswitch.api.http import AuthThrottle

    now = [0.0]
    t = AuthThrottle(limit=2, window_s=10, max_sources=100, clock=lambda: now[0])
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t._sources) == 100
    t.failed("a")
    t.failed("a")
    assert t.retry_after("a") == 10
    now[0] = 10.0
    assert t.retry_after("a") is None


# --- recordings: the owner's credentials, or a signed URL that expires -----------------------------

REC_PATHS = [
    "/v1/Account/{a}/Recording/files/{n}",
    "/v0.1/Recording/{a}/{n}",
    "/2010-04-01/Accounts/{a}/Recordings/files/{n}",
]


@pytest.mark.parametrize("template", REC_PATHS)
async def test_recordings_are_served_to_their_account_only(server: Server, template: str) -> None:
    import time
    import uuid

    from softswitch.api.http import sign_recording_url
    from tests.peers.plivo_api import AUTH_TOKEN, OTHER_ID, OTHER_TOKEN

    manager = server.manager
    assert manager is not None
    name = f"{uuid.uuid4()}.wav"
    path = manager.recording_path(name, AUTH_ID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + b"\0" * 100)
    mine = template.format(a=AUTH_ID, n=name)
    other = template.format(a=OTHER_ID, n=name)

    assert (await fetch(server, "GET", mine, auth=False))[0] == 401
    status, _, headers = await fetch(server, "GET", mine)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    other_auth = {"Authorization": basic(OTHER_ID, OTHER_TOKEN)["Authorization"]}
    # another account: neither under the owner's path nor under its own
    assert (await fetch(server, "GET", mine, headers=other_auth, auth=False))[0] == 404
    assert (await fetch(server, "GET", other, headers=other_auth, auth=False))[0] == 404

    now = int(time.time())
    signed = sign_recording_url(mine, AUTH_TOKEN, now + 60)
    assert (await fetch(server, "GET", signed, auth=False))[0] == 200
    expired = sign_recording_url(mine, AUTH_TOKEN, now - 1)
    assert (await fetch(server, "GET", expired, auth=False))[0] == 403
    tampered = signed[:-4] + ("0000" if not signed.endswith("0000") else "1111")
    assert (await fetch(server, "GET", tampered, auth=False))[0] == 403
    longer = signed.replace(f"expires={now + 60}", f"expires={now + 10**6}")
    assert (await fetch(server, "GET", longer, auth=False))[0] == 403
    # a URL signed by another account's token does not open this account's files
    assert (
        await fetch(server, "GET", sign_recording_url(mine, OTHER_TOKEN, now + 60), auth=False)
    )[0] == 403
    assert (
        await fetch(server, "GET", sign_recording_url(other, OTHER_TOKEN, now + 60), auth=False)
    )[0] == 404


async def test_recording_urls_handed_out_are_signed(server: Server) -> None:
    from types import SimpleNamespace

    manager = server.manager
    assert manager is not None and manager.recording_url_signer is not None
    call: Any = SimpleNamespace(account=manager.account(AUTH_ID), dialect=manager.dialect)
    url = manager.recording_url(call, "x.wav")
    assert url.startswith(f"{server.base_url}/v1/Account/{AUTH_ID}/Recording/files/x.wav?expires=")
    assert "&sig=" in url


def test_legacy_gateway_retries_are_capped() -> None:
    from softswitch.api.legacy.request import GATEWAY_RETRIES_MAX, parse_call

    data = {
        "From": "1000",
        "To": "2000",
        "Gateways": "user/",
        "AnswerUrl": "http://127.0.0.1:9/a",
        "GatewayRetries": "9" * 30 + ",99999",
        "TimeLimit": "9" * 30,
    }
    spec = parse_call(data, dialect="legacy", has_gateway=lambda _name: True)  # at once, not never
    assert 1 <= len(spec.attempts) <= GATEWAY_RETRIES_MAX
    assert (
        spec.timers.time_limit is None
    )  # past 64 bits: not an integer, ignored as the framework does
