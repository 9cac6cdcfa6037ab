"""The Plivo v1 API harness shared by ``test_api_plivo*.py``: a real in-process
:class:`Server` on a temporary SQLite file, the official ``plivo`` SDK pointed at it, and the
customer's web server (a :class:`~tests.peers.webhooks.WebhookReceiver` checking each
callback's ``X-Plivo-Signature-V3`` with the SDK's own validator).

Test modules import the fixtures they use (``env``, ``receiver``, ``sdk_base``) from here.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plivo
import plivo.rest.client as plivo_client
import pytest

from softswitch.config import Account, Config, Limits
from softswitch.server import Server
from tests.conftest import Sipp, free_port
from tests.peers.webhooks import Reply, WebhookReceiver
from tests.peers.webhooks import Request as WebhookRequest

AUTH_ID = "MAAAAAAAAAAAAAAAAAAA"
AUTH_TOKEN = "secret-token-0123456789abcdefghijklmnop"
OTHER_ID = "MABBBBBBBBBBBBBBBBBB"
OTHER_TOKEN = "other-token-0123456789abcdefghijklmnopq"

#: Held calls run this: with the XML interpreter wired it keeps the call up; without it the
#: manager holds the call anyway. Either way the call lasts until the test ends it.
HOLD_XML = '<?xml version="1.0"?><Response><Wait length="30"/></Response>'


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
        # ~10 s of retries (0.05 s doubling to 0.3 s): a receiver down for a few seconds
        # still gets everything.
        webhook_retries=40,
        webhook_backoff_s=0.05,
        webhook_backoff_max_s=0.3,
        answer_url_attempts=3,
        answer_url_deadline_s=10.0,
    )
    for key, value in over.items():
        setattr(cfg, key, value)
    return cfg


def sdk_client(base_url: str, auth_id: str = AUTH_ID, token: str = AUTH_TOKEN) -> plivo.RestClient:
    """The official SDK; :func:`point_sdk_at` makes it talk to us."""
    return plivo.RestClient(auth_id, token)


def point_sdk_at(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """Point the SDK at ``base_url``: voice requests read these module constants each time."""
    root = f"{base_url}/v1/Account"
    for name in (
        "API_VOICE_BASE_URI",
        "API_VOICE_BASE_URI_FALLBACK_1",
        "API_VOICE_BASE_URI_FALLBACK_2",
        "PLIVO_API_BASE_URI",
    ):
        monkeypatch.setattr(plivo_client, name, root)


@pytest.fixture
def sdk_base(monkeypatch: pytest.MonkeyPatch) -> Any:
    return lambda base_url: point_sdk_at(monkeypatch, base_url)


def plivo_app_reply(request: WebhookRequest) -> Reply:
    """The customer's app: answer_url and fallback_url hold the call, callbacks get "ok"."""
    if request.path.startswith(("/answer", "/fallback")):
        return HOLD_XML
    return (200, "ok", "text/plain")


def plivo_receiver(port: int = 0, auth_token: str = AUTH_TOKEN) -> WebhookReceiver:
    """A receiver not started yet (a test brings it up late), checking V3 signatures."""
    return WebhookReceiver(auth_token=auth_token, port=port, respond=plivo_app_reply)


@pytest.fixture
async def receiver(webhook_receiver: Any) -> WebhookReceiver:
    return await webhook_receiver(plivo_receiver())


async def sdk(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The SDK is blocking: run it off the event loop the server runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@dataclass
class Env:
    server: Server
    client: plivo.RestClient
    base: str

    async def sdk(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await sdk(fn, *args, **kwargs)

    def leg(self, call_uuid: str) -> Any:
        """The live call's ``softswitch.ua.OutboundCall`` (kept by the test after the call ends)."""
        return self.server.manager.calls[call_uuid].leg  # type: ignore[union-attr]


async def start_server(cfg: Config, sdk_base: Any) -> Server:
    """A real :class:`Server` (SIP user agent and media on loopback) with the SDK pointed at it."""
    try:
        import softswitch.ua  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the UA is built in parallel
        pytest.skip(f"SIP user agent not available: {exc}")
    server = Server(cfg)
    await server.start()
    sdk_base(server.base_url)
    return server


@pytest.fixture
async def env(tmp_path: Path, sdk_base: Any) -> AsyncIterator[Env]:
    """A real server. Tests ask for ``sipp`` before ``env`` so the server (and its calls)
    stops before the sipp peers are killed."""
    server = await start_server(make_config(tmp_path), sdk_base)
    try:
        yield Env(server, sdk_client(server.base_url), server.base_url)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)


def basic(auth_id: str = AUTH_ID, token: str = AUTH_TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{auth_id}:{token}".encode()).decode()}


def sig_ok(receiver: WebhookReceiver) -> None:
    assert not receiver.bad_signatures, [(h.path, h.headers) for h in receiver.bad_signatures]


def sipp_messages(peer: Sipp) -> str:
    """sipp's ``-trace_msg`` log of one peer (``<scenario>_<pid>_messages.log`` in its cwd)."""
    assert peer.tmp is not None
    return "\n".join(
        p.read_text(errors="replace") for p in peer.tmp.glob(f"*_{peer.proc.pid}_messages.log")
    )


async def sipp_done(*peers: Sipp, timeout: float = 15) -> None:
    """Each sipp peer ran its scenario to the end: every message and every check matched."""
    for peer in peers:
        await asyncio.to_thread(peer.assert_ok, timeout)


async def wait_record(server: Server, request_uuid: str, timeout: float = 10) -> dict[str, Any]:
    """The stored record once the call has ended (whether or not any callback got through)."""
    deadline = time.monotonic() + timeout
    while True:
        rec = server.store.get_call_by_request(AUTH_ID, request_uuid)
        if rec and rec["end_time"]:
            return rec
        assert time.monotonic() < deadline, f"call {request_uuid} did not end: {rec}"
        await asyncio.sleep(0.05)


def free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def _read_until(stream: Any, text: str, limit: int = 200) -> bool:
    for _ in range(limit):
        line = stream.readline()
        if not line:
            return False
        if text in line.decode(errors="replace"):
            return True
    return False


async def serve_subprocess(
    cwd: Path, db: Path, *extra: str, sip_port: int | None = None
) -> tuple[subprocess.Popen[bytes], str, int]:
    """``softswitch serve`` as its own process on ``db`` (so that a test can ``kill -9`` it);
    returns the process, its HTTP base URL and its SIP port once it listens (at most 20 s)."""
    http_port, sip_port = free_tcp_port(), sip_port or free_tcp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softswitch.cli",
            "serve",
            "-q",  # no call-event lines: stderr is not read after start-up (a full pipe blocks)
            "--http",
            f"127.0.0.1:{http_port}",
            "--sip",
            f"127.0.0.1:{sip_port}",
            "--db",
            str(db),
            "--auth-id",
            AUTH_ID,
            "--auth-token",
            AUTH_TOKEN,
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    assert proc.stderr is not None
    try:
        ready = await asyncio.wait_for(
            asyncio.to_thread(_read_until, proc.stderr, "HTTP API on"), 20
        )
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    assert ready, "softswitch serve did not start"
    return proc, f"http://127.0.0.1:{http_port}", sip_port


async def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, no shutdown: live dialogs and media die with the process."""
    proc.kill()
    await asyncio.to_thread(proc.wait, 10)
