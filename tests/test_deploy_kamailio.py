"""deploy/kamailio/kamailio.cfg as shipped (only its -A defines set: ports, list file, probe
interval) in front of two softswitch servers taking inbound calls: sipp's INVITEs to Kamailio
spread over both (Call-ID hashing), and once one answers OPTIONS 503 (draining) every new call
goes to the other. Also: ``kamailio -c`` accepts the configuration as it is."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from softswitch.config import InboundRoute
from softswitch.server import Server
from tests.conftest import REPO, free_port, needs_sipp, wait_bound
from tests.peers.kamailio import KAMAILIO, KAMCMD, MODULES, needs_kamailio
from tests.peers.plivo_api import AUTH_TOKEN, make_config
from tests.peers.webhooks import WebhookReceiver

pytestmark = [needs_kamailio, pytest.mark.peer, pytest.mark.xdist_group("timing")]

CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
# The call is answered (a verb other than Hangup answers an inbound call), then hung up.
HANGUP_XML = '<?xml version="1.0"?><Response><Wait length="1"/><Hangup/></Response>'


def kamailio_args(workdir: Path, port: int, ds_list: Path, *, ping_interval: int = 1) -> list[str]:
    assert KAMAILIO is not None
    return [
        KAMAILIO, "-f", str(CONFIG),
        "-A", f"LISTEN=udp:127.0.0.1:{port}", "-A", f"LISTEN_TCP=tcp:127.0.0.1:{port}",
        "-A", f'DS_LIST="{ds_list}"', "-A", f"DS_PING_INTERVAL={ping_interval}",
        "-A", f'MODULES="{MODULES}"', "-A", f'CTL="unix:{workdir}/kamailio_ctl"',
        "-Y", str(workdir), "-P", str(workdir / "kamailio.pid"), "-w", str(workdir),
        "-m", "32", "-M", "4",
    ]  # fmt: skip


def test_the_shipped_configuration_passes_kamailio_check(tmp_path: Path) -> None:
    ds_list = REPO / "deploy" / "kamailio" / "dispatcher.list"
    args = kamailio_args(tmp_path, 5060, ds_list) + ["-c"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
async def web(webhook_receiver: Any) -> WebhookReceiver:
    receiver = await webhook_receiver(auth_token=AUTH_TOKEN)
    for name in ("a", "b"):
        receiver.xml(f"/answer-{name}", HANGUP_XML)
    return receiver


@pytest.fixture
async def servers(tmp_path: Path, web: WebhookReceiver) -> AsyncIterator[list[Server]]:
    """Two servers, each answering every number with its own answer URL."""
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            route = InboundRoute(
                prefix="",
                number="7000",
                answer_url=web.url(f"/answer-{name}"),
                hangup_url=web.url("/hangup"),
            )
            cfg = make_config(tmp_path / name, inbound=[route], sip_port=free_port())
            (tmp_path / name).mkdir(exist_ok=True)
            server = Server(cfg)
            await server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            await server.stop("hangup", 2.0)


class DispatcherProxy:
    def __init__(self, workdir: Path, workers: list[int]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.port = free_port()
        ds_list = workdir / "dispatcher.list"
        ds_list.write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in workers))
        self.log_path = workdir / "kamailio.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*kamailio_args(workdir, self.port, ds_list), "-DD", "-E"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_bound(self.port, proc=self.proc)
        if self.proc.poll() is not None:
            raise AssertionError(f"kamailio exited {self.proc.returncode}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def states(self) -> dict[int, str]:
        """Each worker's dispatcher flags (``AP`` active, ``IP`` inactive; probing)."""
        assert KAMCMD is not None
        out = subprocess.run(
            [KAMCMD, "-s", f"unix:{self.dir}/kamailio_ctl", "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        found = re.findall(r"URI: sip:127\.0\.0\.1:(\d+)\s+FLAGS: (\w+)", out)
        return {int(port): flags for port, flags in found}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


async def wait_states(proxy: DispatcherProxy, want: dict[int, str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await asyncio.to_thread(proxy.states)) != want:
        assert time.monotonic() < deadline, (
            f"dispatcher states {got}, wanted {want}\n{proxy.log()[-3000:]}"
        )
        await asyncio.sleep(0.1)


async def place(sipp: Any, proxy: DispatcherProxy, web: WebhookReceiver, n: int) -> dict[str, int]:
    """``n`` calls from sipp to Kamailio; how many each server answered."""
    before = {name: len(web.of(f"/answer-{name}")) for name in ("a", "b")}
    hangups = len(web.of("/hangup"))
    caller = sipp(
        "uac_inbound.xml", calls=n, extra=["-s", "7000", "-r", "20", f"127.0.0.1:{proxy.port}"]
    )
    await web.wait_for(lambda r: r.path == "/hangup", count=hangups + n, timeout=30)
    await asyncio.to_thread(caller.assert_ok, 20)
    return {name: len(web.of(f"/answer-{name}")) - before[name] for name in ("a", "b")}


@needs_sipp
async def test_dispatcher_spreads_calls_and_fails_over_when_a_server_drains(
    tmp_path: Path, servers: list[Server], web: WebhookReceiver, sipp: Any
) -> None:
    a, b = servers
    ports = [a.ua.local_port, b.ua.local_port]
    proxy = DispatcherProxy(tmp_path / "kamailio", ports)
    try:
        await wait_states(proxy, {ports[0]: "AP", ports[1]: "AP"})
        spread = await place(sipp, proxy, web, 16)
        assert spread["a"] > 0 and spread["b"] > 0 and sum(spread.values()) == 16, spread
        # A drains: its OPTIONS answer 503, the dispatcher takes it out of the set.
        a.set_unavailable()
        await wait_states(proxy, {ports[0]: "IP", ports[1]: "AP"})
        after = await place(sipp, proxy, web, 8)
        assert after == {"a": 0, "b": 8}, after
    finally:
        proxy.stop()
