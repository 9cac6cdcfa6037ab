"""`softswitch call` as a user runs it: progress lines, one JSON line, exit status."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import needs_sipp


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
