"""``softswitch bench target`` (issue 19) against real peers on loopback: a sipp callee with
an answer/busy/no-answer mix, a sipp echo behind a UDP relay that drops RTP, Kamailio
(digest, Record-Route) in front of baresip; the report's figures are checked against what
the peers counted, and the HTML report is opened in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.target import emodel
from benchmarks.target.plan import CAPS, Hold, Media, PlanError, Ramp
from tests.conftest import REPO, Sipp, free_port, media_ports, needs_sipp
from tests.peers.baresip import needs_baresip
from tests.peers.kamailio import needs_kamailio


def _rtp_ports() -> str:
    ports = media_ports()
    return f"{ports['port_min']}-{ports['port_max']}"


def bench(
    tmp: Path, target: str, *args: str, out: str = "out", yes: bool = True, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``python -m benchmarks target TARGET ARGS`` as a user runs it (own process, own HOME
    for the first-run prompt's memory)."""
    out_dir = tmp / out
    argv = [sys.executable, "-m", "benchmarks", "target", target, "--out", str(out_dir)]
    argv += ["--local-host", "127.0.0.1", "--rtp-ports", _rtp_ports(), "--quiet", *args]
    if yes:
        argv.append("--yes")
    env = dict(os.environ, HOME=str(tmp), XDG_CONFIG_HOME=str(tmp / ".config"))
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc, out_dir


def load_run(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "calls.json").read_text())


# ---------------------------------------------------------------------------- no peers


def test_plan_parses_rates_holds_and_media_and_enforces_caps() -> None:
    ramp = Ramp.parse("2:10:8")
    assert (ramp.at(0), ramp.at(4), ramp.at(8), ramp.at(100)) == (2, 6, 10, 10)
    assert Ramp.parse("5").at(3) == 5
    assert Hold.parse("10-20").kind == "uniform" and Hold.parse("exp:30").b == 300
    assert Media.parse("tone:440+480") == Media("tone", "440+480")
    assert Media.parse("speech:hello there").value == "hello there"
    for bad in (f"{CAPS['rate'] + 1:g}", "0", "0:10:5", "1:2", "x"):
        with pytest.raises(PlanError, match="--rate"):
            Ramp.parse(bad)
    for bad in (f"{CAPS['hold'] + 1:g}", "5-2", "exp:0", "soon"):
        with pytest.raises(PlanError, match="--hold"):
            Hold.parse(bad)
    with pytest.raises(PlanError, match="--play"):
        Media.parse("tone:99999")


def test_emodel_rates_loss_and_delay() -> None:
    clean = emodel.rate(loss_fraction=0.0, rtt_ms=None, jitter_buffer_ms=40, ptime_ms=20)
    assert clean.delay_ms == 60 and math.isclose(clean.r, 93.2 - 0.024 * 60)
    assert 4.3 < clean.mos < 4.45  # G.711's ceiling
    lossy = emodel.rate(loss_fraction=0.10, rtt_ms=None)
    # Ie_eff = 95 * 10 / (10 + 25.1) = 27.07 (G.107 §3.6, G.711 with PLC)
    assert math.isclose(clean.r - lossy.r, 95 * 10 / 35.1, rel_tol=1e-6)
    assert lossy.mos < 3.6
    far = emodel.rate(loss_fraction=0.0, rtt_ms=400)  # Ta = 200 + 60 ms: past the knee
    assert far.r < clean.r - 10
    assert emodel.mos_from_r(-5) == 1.0 and emodel.mos_from_r(120) == 4.5


def test_a_target_is_required_and_caps_are_refused(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "benchmarks", "target"]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "TARGET is required" in run.stderr
    run = subprocess.run(
        [*argv, "sip:x@127.0.0.1:9", "--concurrency", "999999", "--yes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--concurrency" in run.stderr


def test_first_run_prompt_refuses_without_a_terminal_and_yes(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: no call may be placed anyway
    proc, out_dir = bench(tmp_path, f"sip:x@127.0.0.1:{port}", yes=False)
    assert proc.returncode == 2, proc.stderr
    assert "allowed to test" in proc.stderr and "--yes" in proc.stderr
    assert not out_dir.exists()


# ---------------------------------------------------------------------------- sipp mix

MIX_CALLS = 30


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run against the sipp mix (answer / busy / ring until CANCEL), shared by the
    checks of its figures and of its report in the browser."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed")
    tmp = tmp_path_factory.mktemp("bench-mix")
    peer = Sipp("uas_bench_mix.xml", calls=MIX_CALLS, tmp=tmp, timeout=90)
    try:
        proc, out_dir = bench(
            tmp,
            peer.uri,
            "--calls",
            str(MIX_CALLS),
            "--rate",
            "5:15:2",
            "--concurrency",
            "8",
            "--hold",
            "2-3",
            "--ring-timeout",
            "1",
            "--digits",
            "159#",
            "--label",
            "mix",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        peer.assert_ok(30)
        log = "\n".join(p.read_text(errors="replace") for p in tmp.glob("*_messages.log"))
    finally:
        peer.stop()
    return {"run": load_run(out_dir), "out": out_dir, "log": log, "stdout": proc.stdout}


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
def test_mix_figures_match_what_sipp_counted(mix_run: dict[str, Any]) -> None:
    run, log = mix_run["run"], mix_run["log"]
    agg = run["aggregate"]
    answered = log.count("SIP/2.0 200 Answer OK")
    busy = log.count("SIP/2.0 486 Busy Here")
    rung_out = log.count("SIP/2.0 487 Request Terminated")
    assert answered + busy + rung_out == MIX_CALLS
    assert answered and busy and rung_out, (answered, busy, rung_out)  # a mix (p < 1e-5 else)
    assert agg["attempts"] == MIX_CALLS
    assert agg["outcomes"] == {
        k: v for k, v in {"answered": answered, "busy": busy, "no_answer": rung_out}.items() if v
    }
    assert agg["failures"] == {
        k: v for k, v in {"486 USER_BUSY": busy, "487 NO_ANSWER": rung_out}.items() if v
    }
    assert math.isclose(agg["asr_pct"], 100.0 * answered / MIX_CALLS)
    assert log.count("BYE sip:") == answered and log.count("SIP/2.0 200 Bye OK") == answered
    assert log.count("CANCEL sip:") == rung_out
    calls = run["calls"]
    assert len(calls) == MIX_CALLS
    for call in calls:
        if call["outcome"] == "busy":
            assert call["pdd_ms"] is None and call["sip_status"] == 486  # no 18x before the 486
        else:
            assert 0 < call["pdd_ms"] < 1000
        if call["outcome"] == "answered":
            assert call["pdd_ms"] <= call["setup_ms"] < 1000
            assert call["bye_rtt_ms"] is not None and call["retransmissions"] == 0
            assert 2 <= call["hold_s"] <= 3 and call["duration_s"] >= 1.99
            assert call["packets_received"] > 20 and call["lost"] == 0
            assert call["mos"] > 4.3  # G.711, no loss, 60 ms
            assert call["dtmf_ok"] is True and call["dtmf_received"] == "159#"  # echoed
            assert call["dtmf_sent"] == 4
        else:
            assert call["setup_ms"] is None and call["mos"] is None
    assert agg["dtmf"] == {
        "calls": answered,
        "digits_sent": 4 * answered,
        "ok": answered,
        "failed": 0,
    }
    assert agg["acd_s"] >= 2 and agg["setup_ms"]["p95"] is not None
    assert agg["rate_achieved"] > 3
    # The timeline saw calls up and the CSV has every call.
    assert max(p["up"] for p in run["timeline"]) >= 1
    csv_rows = (mix_run["out"] / "calls.csv").read_text().strip().splitlines()
    assert len(csv_rows) == MIX_CALLS + 1 and csv_rows[0].startswith("seq,call_id,")
    summary = json.loads(mix_run["stdout"].strip().splitlines()[-1])
    assert summary["answered"] == answered


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
def test_retransmissions_and_setup_time_match_a_slow_callee(tmp_path: Path) -> None:
    calls = 4
    peer = Sipp("uas_bench_slow.xml", calls=calls, tmp=tmp_path, timeout=60)
    try:
        proc, out_dir = bench(
            tmp_path, peer.uri, "--calls", str(calls), "--rate", "4", "--hold", "1"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        peer.assert_ok(30)
    finally:
        peer.stop()
    log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
    invites_seen = len(re.findall(r"^INVITE sip:", log, re.MULTILINE))
    run = load_run(out_dir)
    # Timer A (T1 = 0.5 s): one INVITE retransmission per call before sipp's 1 s pause ends.
    assert invites_seen == 2 * calls
    assert run["aggregate"]["retransmissions"] == invites_seen - calls
    assert [c["retransmissions"] for c in run["calls"]] == [1] * calls
    for call in run["calls"]:
        assert 1000 <= call["pdd_ms"] <= call["setup_ms"] < 1400


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
def test_prompt_on_a_terminal_then_remembered_with_a_live_status_line(tmp_path: Path, sipp) -> None:
    """The first run against a target asks on the terminal; typed ``yes``, it runs (with
    the status line) and the next run against it does not ask."""
    peer = sipp("uas_answer.xml", calls=2, timeout=60)

    def run_on_pty(answer: bytes | None) -> tuple[int, str]:
        master, slave = pty.openpty()
        argv = [sys.executable, "-m", "benchmarks", "target", peer.uri, "--calls", "1"]
        argv += ["--hold", "1.5", "--local-host", "127.0.0.1", "--rtp-ports", _rtp_ports()]
        argv += ["--out", str(tmp_path / "out")]
        env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"))
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        out = b""
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if answer is not None and not answered and b"Type yes" in out:
                os.write(master, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        os.close(master)
        return proc.wait(10), out.decode(errors="replace")

    code, text = run_on_pty(b"yes\n")
    assert code == 0, text
    assert "allowed to test" in text and "Type yes" in text
    assert re.search(r"\r\s*[\d.]+s\s+up\s+\d+\s+rate", text), text  # the live line
    assert "ASR" in text and "p95 setup" in text
    acks = json.loads((tmp_path / ".config" / "softswitch" / "bench-target-ack.json").read_text())
    assert acks == [peer.uri]
    code, text = run_on_pty(None)  # remembered: no question this time
    assert code == 0 and "Type yes" not in text, text
    peer.assert_ok(30)


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
def test_sigint_stops_placing_calls_and_hangs_up_the_live_ones(tmp_path: Path, sipp) -> None:
    peer = sipp("uas_answer.xml", calls=100, timeout=60)
    argv = [sys.executable, "-m", "benchmarks", "target", peer.uri, "--calls", "100"]
    argv += ["--rate", "5", "--hold", "60", "--yes", "--quiet", "--local-host", "127.0.0.1"]
    argv += ["--rtp-ports", _rtp_ports(), "--out", str(tmp_path / "out")]
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"))
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def acks() -> int:
        log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
        return len(re.findall(r"^ACK sip:", log, re.MULTILINE))

    deadline = time.monotonic() + 30
    while acks() < 3:  # three calls up
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)  # not the 60 s hold
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run = load_run(tmp_path / "out")
    agg = run["aggregate"]
    assert 3 <= agg["attempts"] < 20 and agg["answered"] >= 3
    assert all(c["duration_s"] < 30 for c in run["calls"])
    log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
    # Every answered call was hung up with a BYE the callee got.
    assert len(re.findall(r"^BYE sip:", log, re.MULTILINE)) == agg["answered"]
    assert agg["outcomes"].get("answered", 0) + agg["outcomes"].get("stopped", 0) == agg["attempts"]


# ---------------------------------------------------------------------------- loss


class LossyRelay:
    """A UDP relay for RTP between the benchmark and sipp's echo: packets from the caller go
    to ``echo``, except every ``every``-th of each SSRC (after its first five) is dropped;
    what comes back goes to the caller that sent that SSRC (sipp echoes packets unchanged).
    RTCP on port + 1 is swallowed. Bounded: it runs until :meth:`stop` or ``lifetime`` s."""

    def __init__(self, echo: tuple[str, int], every: int = 0, lifetime: float = 120.0) -> None:
        self.echo = echo
        self.every = every
        self.port = free_port(pair=True)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", self.port))
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind(("127.0.0.1", self.port + 1))
        self.callers: dict[bytes, tuple[str, int]] = {}
        self.seen: dict[bytes, int] = {}
        self.forwarded = self.dropped = self.returned = 0
        self.voiced = 0  # G.711 packets carrying more than near-silence
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self.rtp, self.rtcp], [], [], 0.1)
            for sock in ready:
                data, source = sock.recvfrom(2048)
                if sock is self.rtcp or len(data) < 12:
                    continue
                ssrc = data[8:12]
                if source == self.echo:
                    caller = self.callers.get(ssrc)
                    if caller is not None:
                        self.returned += 1
                        self.rtp.sendto(data, caller)
                    continue
                self.callers[ssrc] = source
                n = self.seen[ssrc] = self.seen.get(ssrc, 0) + 1
                if self.every and n > 5 and n % self.every == 0:
                    self.dropped += 1
                    continue
                self.forwarded += 1
                if sum(1 for b in data[12:] if b & 0x7F < 0x70) > 40:
                    self.voiced += 1
                self.rtp.sendto(data, self.echo)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.rtp.close()
        self.rtcp.close()


def _relay_run(
    tmp: Path, every: int, label: str, play: str
) -> tuple[dict[str, Any], LossyRelay, Path]:
    calls = 3
    tmp.mkdir(parents=True, exist_ok=True)
    relay = LossyRelay(("127.0.0.1", 0), every)  # the echo's port: once sipp has it
    peer = Sipp(
        "uas_bench_relay.xml",
        calls=calls,
        tmp=tmp,
        timeout=60,
        extra=["-set", "relay", str(relay.port)],
    )
    relay.echo = ("127.0.0.1", peer.media_port)
    try:
        proc, out_dir = bench(
            tmp,
            peer.uri,
            "--calls",
            str(calls),
            "--rate",
            "10",
            "--concurrency",
            "3",
            "--hold",
            "3",
            "--label",
            label,
            "--play",
            play,
            out=label,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        peer.assert_ok(30)
    finally:
        peer.stop()
        relay.stop()
    return load_run(out_dir), relay, out_dir


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
def test_loss_through_a_relay_lowers_mos_by_what_the_relay_dropped(tmp_path: Path) -> None:
    # What is played does not change the figures; both kinds are played, and reach the relay.
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        t = np.arange(8000) / 8000
        w.writeframes((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())
    clean, clean_relay, clean_out = _relay_run(
        tmp_path / "clean", 0, "clean", "speech:testing one two three"
    )
    lossy, relay, lossy_out = _relay_run(tmp_path / "lossy", 10, "lossy", f"file:{wav}")
    assert clean_relay.voiced > 30 and relay.voiced > 100
    assert clean_relay.dropped == 0 and relay.dropped > 30
    for run, r in ((clean, clean_relay), (lossy, relay)):
        media = run["aggregate"]["media"]
        assert run["aggregate"]["answered"] == 3
        # Everything we sent reached the relay; every packet it returned but the last few
        # of each call (in flight at the BYE) reached us; the gaps we counted are its drops.
        assert media["packets_sent"] == r.forwarded + r.dropped
        assert 0 <= r.returned - media["packets_received"] <= 3 * 3
        assert r.dropped - 3 <= media["lost"] <= r.dropped
    assert clean["aggregate"]["media"]["lost"] == 0
    loss = lossy["aggregate"]["media"]["loss_pct_mean"]
    assert 8.0 < loss < 11.0, loss
    clean_mos = clean["aggregate"]["media"]["mos_mean"]
    lossy_mos = lossy["aggregate"]["media"]["mos_mean"]
    assert clean_mos > 4.3 and lossy_mos < 3.7 and clean_mos - lossy_mos > 0.6
    for call in lossy["calls"]:
        expected = emodel.rate(
            loss_fraction=call["lost"] / (call["lost"] + call["packets_received"]),
            rtt_ms=None,
            jitter_ms=call["jitter_ms"],
        )
        assert math.isclose(call["mos"], expected.mos, abs_tol=1e-3)
    # Two runs side by side.
    cmp_dir = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "target", "--compare"]
        + [str(clean_out / "calls.json"), str(lossy_out / "calls.json"), "--out", str(cmp_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    page = (cmp_dir / "compare.html").read_text()
    assert "clean vs lossy" in page and page.count("data:image/png;base64,") == 5


# ---------------------------------------------------------------------------- Kamailio


@needs_kamailio
@needs_baresip
@pytest.mark.peer
@pytest.mark.xdist_group("timing")
def test_through_kamailio_with_digest_to_a_registered_baresip(
    tmp_path: Path, kamailio, baresip
) -> None:
    # The fixture's registrar takes its one user: baresip registers as that user (digest),
    # and the benchmark calls that number through the proxy as a trunk (digest on each
    # INVITE and BYE). No static route: the proxy finds baresip by its registration.
    proxy = kamailio(user="2000")
    aor = f"sip:{proxy.user}@127.0.0.1:{proxy.port}"
    peer = baresip(max_call_s=60, register=aor, auth_pass=proxy.password)
    deadline = time.monotonic() + 10
    while not proxy.contacts(proxy.user):
        assert time.monotonic() < deadline, f"baresip did not register:\n{peer.log()[-2000:]}"
        time.sleep(0.05)
    proc, out_dir = bench(
        tmp_path,
        proxy.user,
        "--gateway",
        f"127.0.0.1:{proxy.port}",
        "--username",
        proxy.user,
        "--password",
        proxy.password,
        "--from-user",
        proxy.user,
        "--calls",
        "2",
        "--rate",
        "2",
        "--concurrency",
        "2",
        "--hold",
        "12",
        "--digits",
        "42",
        "--expect-digits",
        "",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(out_dir)
    agg = run["aggregate"]
    assert agg["answered"] == 2, (agg, proxy.log()[-3000:], peer.log()[-2000:])
    log = proxy.log()
    # Each INVITE and each BYE was challenged once, then went through with credentials
    # (the BYE along the Record-Route).
    assert re.findall(r"(CHALLENGE|AUTHORIZED) INVITE\b", log).count("AUTHORIZED") == 2
    assert re.findall(r"(CHALLENGE|AUTHORIZED) BYE\b", log).count("AUTHORIZED") == 2
    # Two calls at once interleave their events in baresip's log: count the event starts.
    starts = sorted(d for d, end, _ in peer.dtmf_events() if not end)
    assert starts == sorted("42" * 2), peer.dtmf_events()
    assert agg["dtmf"] == {"calls": 0, "digits_sent": 4, "ok": 0, "failed": 0}
    for call in run["calls"]:
        assert call["setup_ms"] is not None and call["bye_rtt_ms"] is not None
        assert call["packets_received"] > 100 and call["lost"] == 0
        assert call["mos"] > 4.0
    # baresip sends RTCP receiver reports every 5 s or so: past our first sender report
    # (2.5-7.5 s into the call, RFC 3550 §6.2), one carries its LSR and the RTT is measured.
    assert agg["media"]["rtt_measured"] >= 1, run["calls"]
    assert all(c["rtt_ms"] < 100 for c in run["calls"] if c["rtt_ms"] is not None)


# ---------------------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.peer
@needs_sipp
@pytest.mark.xdist_group("timing")
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="chromium / chromium-driver not installed"
)
def test_report_renders_in_headless_chromium_with_its_plots(
    mix_run: dict[str, Any], tmp_path: Path
) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, port=free_port(socket.SOCK_STREAM))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    try:
        driver.get((mix_run["out"] / "report.html").as_uri())
        assert "bench target" in driver.title
        images = driver.find_elements(By.CSS_SELECTOR, ".plots img")
        assert [i.get_attribute("id") for i in images] == [
            "plot-timeline",
            "plot-setup",
            "plot-pdd",
            "plot-quality",
            "plot-failures",
        ]
        for img in images:
            width, height = driver.execute_script(
                "return arguments[0].complete ? [arguments[0].naturalWidth, arguments[0].naturalHeight]"
                " : [0, 0]",
                img,
            )
            assert width > 300 and height > 150, img.get_attribute("id")
            assert img.size["width"] > 300  # laid out, visible
        summary = driver.find_element(By.ID, "summary").text
        agg = mix_run["run"]["aggregate"]
        assert f"ASR % {agg['asr_pct']:.1f}" in summary
        failures = driver.find_element(By.ID, "failures").text
        for key, count in agg["failures"].items():
            assert f"{key} {count}" in failures
        # The plots are drawn, not blank: the screenshot of one has many colours.
        png = driver.find_element(By.ID, "plot-timeline").screenshot_as_png
        assert len(png) > 5000
        (tmp_path / "report.png").write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
