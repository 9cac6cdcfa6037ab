"""`softswitch call` as a user runs it: progress lines, one JSON line, exit status."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import free_port, needs_sipp


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "softswitch.cli", *args], capture_output=True, text=True, timeout=timeout)


@needs_sipp
def test_call_answered_prints_steps_and_json(sipp):
    peer = sipp("uas_answer.xml")
    out = run_cli("call", peer.uri, "--from", "1000", "--caller-name", "Alice", "--hangup-after", "1",
                  "--header", "X-PH-Campaign=42")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert any("ringing 180" in ln for ln in lines) and any("answered 200" in ln for ln in lines)
    summary = json.loads(lines[-1])
    assert summary["answered"] is True and summary["sip_status"] == 200
    assert summary["hangup_cause"] == "NORMAL_CLEARING" and 0.9 < summary["duration"] < 3
    assert {"call_uuid", "digits_received", "media"} <= summary.keys()
    peer.assert_ok()


@needs_sipp
def test_call_busy_exits_1(sipp):
    peer = sipp("uas_busy.xml")
    out = run_cli("call", peer.uri, "--from", "1000")
    assert out.returncode == 1
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["answered"] is False and summary["hangup_cause"] == "USER_BUSY" and summary["sip_status"] == 486


def test_bad_usage_exits_2():
    assert run_cli("call", "sip:x@127.0.0.1").returncode == 2  # --from missing
    assert run_cli("call", "not a target", "--from", "1").returncode == 2
    assert run_cli("call", "sip:x@127.0.0.1", "--from", "1", "--send-digits", "12x").returncode == 2
    assert run_cli("call", "sip:x@127.0.0.1", "--from", "1", "--caller-name", "x" * 51).returncode == 2
    assert run_cli("call", "+14155550100", "--from", "1").returncode == 2  # no gateway for a number
    assert run_cli("call", "sip:x@127.0.0.1", "--from", "1", "--header", "bad header").returncode == 2


def test_machine_detection_summary_uses_the_detectors_names():
    from media.amd import AmdResult
    from softswitch.cli import _amd_summary

    human = AmdResult(machine=False, status="HUMAN", reason="HUMAN", decided_at_ms=2100,
                      initial_silence_ms=300, greeting_ms=800, words=1)
    view = _amd_summary(human)
    assert view["Machine"] == "false" and view["machine"] is False and view["status"] == "HUMAN"
    assert not {"beep_hz", "beep_ms", "beep_at_ms"} & view.keys()
    beep = AmdResult(machine=True, status="MACHINE", reason="LONGGREETING", decided_at_ms=3000,
                     initial_silence_ms=200, greeting_ms=2500, words=4, beep_hz=1000.0, beep_ms=400,
                     beep_at_ms=9000)
    view = json.loads(json.dumps(_amd_summary(beep)))
    assert view["Machine"] == "true" and view["beep_hz"] == 1000.0 and view["beep_at_ms"] == 9000


def test_default_local_address_is_the_route_to_the_target():
    """No ``--sip``: the source address the kernel would pick for the first hop (a connected
    UDP socket's name; nothing is sent). Loopback targets stay on loopback."""
    import socket

    from softswitch.cli import _target_host, local_address_for

    assert local_address_for("127.0.0.1") == "127.0.0.1"
    assert local_address_for("127.0.0.9", 5080) == "127.0.0.1"
    assert local_address_for("localhost") in ("127.0.0.1", "::1")
    if socket.has_ipv6:
        assert local_address_for("[::1]") in ("::1", "127.0.0.1")
    # Any other target: one of this machine's addresses (it can be bound), or the fallback.
    picked = local_address_for("203.0.113.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((picked, 0))
    assert _target_host("sip:bob@127.0.0.5:5070;transport=tcp", None) == ("127.0.0.5", 5070)
    assert _target_host("bob@[::1]", None) == ("::1", 5060)
    assert _target_host("sip:127.0.0.1", None) == ("127.0.0.1", 5060)
    assert _target_host("14155550100", None) is None  # a number goes where --gateway says
    assert _target_host("14155550100", ("127.0.0.2", 5062)) == ("127.0.0.2", 5062)


# ---------------------------------------------------------------------------- rough edges


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "softswitch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Lines:
    """``proc``'s stdout lines, read by a thread (a select() on the pipe misses lines already
    in the reader's buffer)."""

    def __init__(self, proc: subprocess.Popen[str], stream: Any = None) -> None:
        import queue
        import threading

        self.proc = proc
        self.stream = stream if stream is not None else proc.stdout
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.stream is not None
        for line in self.stream:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not printed; got {self.lines}")

    def rest(self, timeout: float = 20) -> str:
        """Everything up to the end of the output, once the process has exited."""
        self.proc.wait(timeout)
        self.thread.join(timeout)
        while not self.queue.empty():
            line = self.queue.get()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


@needs_sipp
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_hangs_up_the_answered_call_and_reports_it(sipp, sig):
    """SIGTERM (``timeout``) and SIGINT (Ctrl-C) hang up with a BYE (the sipp UAS scenario
    waits for it and exits 0 only then), print the terminated line and the JSON summary, and
    exit by the call's outcome: answered, 0."""
    peer = sipp("uas_answer.xml")
    proc = start_cli("call", peer.uri, "--from", "1000")
    try:
        output = Lines(proc)
        output.wait_for("answered 200")
        proc.send_signal(sig)
        out = output.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    lines = out.strip().splitlines()
    assert any(f"{sig.name}: hanging up" in ln for ln in lines), out
    assert any("terminated NORMAL_CLEARING" in ln and "by caller" in ln for ln in lines), out
    summary = json.loads(lines[-1])
    assert summary["answered"] is True and summary["hangup_source"] == "caller"
    assert proc.returncode == 0, err
    peer.assert_ok()


@needs_sipp
def test_sigterm_while_ringing_cancels_and_exits_1(sipp):
    peer = sipp("uas_ring_cancel.xml")
    proc = start_cli("call", peer.uri, "--from", "1000")
    try:
        output = Lines(proc)
        output.wait_for("ringing 180")
        proc.send_signal(signal.SIGTERM)
        out = output.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["answered"] is False and summary["hangup_cause"] == "ORIGINATOR_CANCEL"
    assert proc.returncode == 1, err
    peer.assert_ok()


def test_port_in_use_is_one_line_naming_the_flag():
    """``call --sip`` and a second ``serve`` on a bound port: one line naming the flag, exit 2,
    no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        out = run_cli("call", "sip:x@127.0.0.1:9", "--from", "1", "--sip", f"127.0.0.1:{port}")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and f"--sip 127.0.0.1:{port}" in out.stderr, out.stderr
        assert "in use" in out.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        sip_port = free_port()
        out = run_cli("serve", "--http", f"127.0.0.1:{port}", "--sip", f"127.0.0.1:{sip_port}", "--db", ":memory:")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and f"--http 127.0.0.1:{port}" in out.stderr, out.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        http_port = free_port(socket.SOCK_STREAM)
        out = run_cli("serve", "--http", f"127.0.0.1:{http_port}", "--sip", f"127.0.0.1:{port}", "--db", ":memory:")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and f"--sip 127.0.0.1:{port}" in out.stderr, out.stderr


def test_usage_errors_name_the_flag_and_show_the_subcommand_usage(tmp_path):
    cases = [
        (["--hangup-after", "-1"], "--hangup-after"),
        (["--sip", "127.0.0.1:abc"], "--sip"),
        (["--gateway", "gw.example:99999"], "--gateway"),
        (["--rtp-ports", "40000"], "--rtp-ports"),
        (["--play", str(tmp_path / "missing.wav")], "--play"),
        (["--username", "u"], "--username"),
    ]
    for extra, flag in cases:
        out = run_cli("call", "sip:x@127.0.0.1:9", "--from", "1", *extra)
        assert out.returncode == 2, (extra, out.stdout)
        assert out.stderr.startswith("usage: softswitch call"), out.stderr
        assert flag in out.stderr.splitlines()[-1], out.stderr
        assert "trying" not in out.stdout  # nothing was dialled
    out = run_cli("call", "+14155550100", "--from", "1")  # a number with no gateway
    assert out.returncode == 2 and out.stderr.startswith("usage: softswitch call"), out.stderr


def test_version_and_logging_flags_after_the_subcommand():
    from softswitch import __version__

    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"softswitch {__version__}"
    out = run_cli("call", "sip:x@127.0.0.1:9", "--from", "1", "-q", "--log-format", "json", "--hangup-after", "x")
    assert out.returncode == 2 and "--hangup-after" in out.stderr


def test_dns_failure_reports_the_reason():
    out = run_cli("call", "sip:bob@no-such-host.invalid", "--from", "1000")
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert any("terminated NO_ROUTE_DESTINATION" in ln and "no-such-host.invalid did not resolve" in ln
               for ln in lines), out.stdout
    summary = json.loads(lines[-1])
    assert "did not resolve" in summary["reason"]


def test_tcp_refusal_is_503_not_408():
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    out = run_cli("call", f"sip:bob@127.0.0.1:{port};transport=tcp", "--from", "1000")
    assert out.returncode == 1
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["sip_status"] == 503 and summary["hangup_cause"] == "DESTINATION_OUT_OF_ORDER"


# ---------------------------------------------------------------------------- serve's logs


@needs_sipp
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_serve_logs_one_info_line_per_call_event(tmp_path, sipp, fmt):
    """``softswitch serve`` (flags after the subcommand) logs each call event once (here, a
    busy callee: dialing, then hangup with its cause), as text or one JSON object per line."""
    import base64
    import urllib.request

    peer = sipp("uas_busy.xml")
    http_port, sip_port = free_port(socket.SOCK_STREAM), free_port()
    auth_id, token = "MALOGTEST00000000001", "log-test-token"
    proc = subprocess.Popen(
        [sys.executable, "-m", "softswitch.cli", "serve", "--http", f"127.0.0.1:{http_port}", "--sip",
         f"127.0.0.1:{sip_port}", "--db", str(tmp_path / "c.db"), "--auth-id", auth_id, "--auth-token", token,
         "--log-format", fmt],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        logged = Lines(proc, proc.stderr)
        logged.wait_for("HTTP API on")
        body = json.dumps({"from": "1000", "to": peer.uri, "answer_url": "http://127.0.0.1:9/a"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/Account/{auth_id}/Call/", data=body, method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": "Basic " + base64.b64encode(f"{auth_id}:{token}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
        logged.wait_for("hangup")
        lines = logged.lines
    finally:
        proc.terminate()
        proc.wait(20)
    events = [ln for ln in lines if "softswitch.call.events" in ln]
    if fmt == "json":
        records = [json.loads(ln) for ln in events]
        assert [r["event"] for r in records] == ["dialing", "hangup"], lines
        end = records[-1]
        assert end["level"] == "INFO" and end["to"] == peer.uri and end["from"] == "1000"
        assert end["cause"] == "USER_BUSY" and end["sip_status"] == 486 and end["call_uuid"]
    else:
        assert len(events) == 2 and " INFO softswitch.call.events: call " in events[0], lines
        assert "dialing" in events[0] and f"to={peer.uri}" in events[0]
        assert "hangup" in events[1] and "cause=USER_BUSY" in events[1] and "sip_status=486" in events[1]
    peer.assert_ok()
async def test_call_over_tls_verifies_the_callee_against_tls_ca(tmp_path):
    """``--transport tls`` / a ``sips:`` target with ``--tls-ca``: the callee's certificate (a
    throw-away CA's) is verified and the call is answered; without the CA it fails."""
    import asyncio

    from sip.aio import UserAgent, UserAgentConfig
    from tests.peers.tls_certs import TestCA

    ca = TestCA(tmp_path)
    issued = ca.issue("callee", ips=("127.0.0.1",))
    callee = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, transports=("udp", "tls"),
                                       accept_inbound=True, tls_cert=str(issued.cert),
                                       tls_key=str(issued.key), tls_port=0))
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    callee.on_incoming = lambda call: call.answer(sdp)
    await callee.start()
    try:
        assert callee.tls is not None
        target = f"sips:bob@127.0.0.1:{callee.tls.local[1]}"

        async def cli(*extra: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "softswitch.cli", "call", target, "--from", "1000",
                "--hangup-after", "0.5", "--ring-timeout", "5", *extra,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode or 0, out.decode(), err.decode()

        code, out, err = await cli("--tls-ca", str(ca.cert))
        assert code == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["answered"] is True and summary["sip_status"] == 200
        code, out, _ = await cli()  # the system store does not know the test CA
        assert code == 1
        assert json.loads(out.strip().splitlines()[-1])["answered"] is False
    finally:
        await callee.close(grace=0.5)


def test_tls_key_without_cert_is_a_usage_error():
    out = run_cli("call", "sips:bob@127.0.0.1", "--from", "1", "--tls-key", "/etc/hostname")
    assert out.returncode == 2 and "--tls-key needs --tls-cert" in out.stderr
