"""The harness of the Plivo XML suites (``test_api_xml.py``, ``test_api_live_control.py``,
``test_api_amd.py``, ``test_api_gateway.py``): a real :class:`Server`, the official SDK
pointed at it, the user's web server (``env.web``, a
:class:`~tests.peers.webhooks.WebhookReceiver` serving XML documents by path) and sipp's
built-in UAS as the callee (``uas``).

Test modules import the fixtures they use (``env``, ``uas``) from here.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import plivo
import plivo.rest.client as plivo_client
import pytest

from softswitch.config import Account, Config, Limits
from softswitch.server import Server
from tests.conftest import free_port, wait_bound, worker_index
from tests.peers.webhooks import WebhookReceiver

AUTH_ID = "MAXMLTESTACCOUNT0001"
AUTH_TOKEN = "xml-test-token-0123456789abcdef"

HOLD = '<Response><Wait length="60"/></Response>'


# --- softswitch, pointed at by the official SDK ----------------------------------------------


def make_config(tmp_path: Path, **over: Any) -> Config:
    cfg = Config(
        http_host="127.0.0.1",
        http_port=0,
        sip_host="127.0.0.1",
        sip_port=0,
        # A range of its own per xdist worker (the pool skips ports in use anyway).
        rtp_port_min=41000 + 1000 * worker_index(),
        rtp_port_max=41999 + 1000 * worker_index(),
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
    web: WebhookReceiver

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
        hits = await self.web.wait_for(path=urlsplit(kw["answer_url"]).path, timeout=15)
        return hits[-1].params["CallUUID"]


@pytest.fixture
async def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook_receiver: Any
) -> AsyncIterator[Env]:
    # The user's web server: XML documents by path (``env.web.routes``), "ok" to callbacks,
    # each request's V3 signature checked. It stops after the server (fixture order).
    webapp = await webhook_receiver(auth_token=AUTH_TOKEN, respond=(200, "ok", "text/plain"))
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
        wait_bound(self.port, proc=self.proc)

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
    hits = await env.web.wait_for(path="/hangup", call_uuid=call_uuid, timeout=timeout)
    assert len(hits) == 1, "exactly one hangup callback"
    assert hits[0].signed, "the hangup callback carries a valid X-Plivo-Signature-V3"
    return hits[0].params
