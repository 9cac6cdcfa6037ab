"""A real baresip callee on 127.0.0.1 for media tests (Debian ``baresip-core``, baresip 1.0).

How baresip 1.0 is driven here (all set in a private config directory, ``baresip -f DIR``):

* ``config``: ``sip_listen 127.0.0.1:PORT`` and ``net_interface 127.0.0.1`` (otherwise
  baresip writes the machine's LAN address into its SDP and RTP would leave loopback),
  ``rtp_ports`` a 3000-port block in 44000-58999 per xdist worker (away from our engine's
  default pool and from the XML suites' 41000+ blocks), no jitter buffer
  (``jitter_buffer_delay 0-0``: received packets are decoded as they arrive, so the log and
  the recording keep arrival timing), no UI module (``stdio`` cannot poll a non-terminal
  stdin), modules ``g711``, ``aufile`` (audio source), ``sndfile`` (recorder), ``menu``
  (auto-answer) and ``ctrl_tcp`` (to answer after a delay).
* ``accounts``: ``<sip:baresip@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA``
  (``codecs=("G722",)`` or ``("opus",)`` loads ``g722.so``/``opus.so`` and lists only those;
  baresip resamples between the 8 kHz microphone file and the codec's rate itself, and its
  recordings are then at the codec's rate: :func:`read_wav_8k` brings them to 8 kHz)
  (``answermode=manual`` plus a ctrl_tcp ``accept`` command when ``answer_delay_ms`` > 0).
* Microphone: ``audio_source aufile,FILE``. aufile wants a WAV at the source rate (8 kHz mono
  16-bit here) and **hangs up the call at end of file**, so the file we hand it is
  ``play_wav`` converted to 8 kHz mono followed by ``max_call_s`` seconds of silence (or only
  the silence when there is nothing to play).
* Recording: the ``sndfile`` audio filter writes ``dump-<time>-dec.wav`` (what baresip
  decoded from our RTP) and ``dump-<time>-enc.wav`` (what it sent), 8 kHz mono 16-bit PCM for
  G.711. The ``dec`` file holds decoded audio packets back to back in arrival order: RFC 4733
  event packets and lost packets add no samples, so it is on the wall clock only while audio
  flows without loss (true on loopback when DTMF goes in-band). libsndfile finalises the WAV
  header when the call ends, so read it after the call is over or after :meth:`stop`.
* DTMF: baresip logs ``received event: 'D' (end=0|1)`` for each RFC 4733 event start and end.
  Its output goes to a pseudo-terminal (line-buffered, unlike a pipe) read by a thread that
  stamps each line with ``time.monotonic()`` on arrival: the same clock as asyncio's loop.
* ``mediaenc="srtp"`` / ``"srtp-mand"``: SRTP with SDES keys through the ``srtp`` module,
  the account's ``;mediaenc=`` parameter (``srtp``: RTP/AVP with ``a=crypto``, best effort;
  ``srtp-mand``: RTP/SAVP only). ``None`` (the default) loads no SRTP module: a baresip
  without SRTP.
* ``telephone_event=False``: baresip 1.0 has no switch for it (it always answers an offered
  telephone-event). The fixture then puts a small UDP relay in front of baresip's SIP port
  that removes telephone-event from the SDP baresip sends; the relay is what :attr:`uri`
  points at. Only the INVITE transaction crosses it: baresip's Contact is its own port, so
  ACK, BYE and RTP go direct.

Every process and thread is bounded: baresip runs with ``-t`` (quits after
``max_lifetime_s``), start-up waits at most 5 s, and :meth:`stop` kills after 5 s.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port, worker_index
from tests.peers._console import StampedLines

#: Each xdist worker's baresips pick RTP ports in a block of their own.
BARESIP_RTP_BASE = 44000 + 3000 * (worker_index() % 5)

__all__ = ["Baresip", "baresip", "needs_baresip", "needs_baresip_codec", "needs_baresip_srtp", "read_wav_8k"]

BARESIP = shutil.which("baresip")
MODULE_DIR = Path("/usr/lib/baresip/modules")
_NEEDED_MODULES = ("g711.so", "aufile.so", "sndfile.so", "menu.so", "ctrl_tcp.so")
#: Codecs the fixture can restrict baresip to, and the module each needs.
CODEC_MODULES = {"PCMU": "g711.so", "PCMA": "g711.so", "G722": "g722.so", "OPUS": "opus.so"}
#: baresip's names for them in ``audio_codecs``: ``name/srate/channels`` with baresip's own
#: sample rate (G.722 registers as 16000 although its rtpmap says 8000); a name it does not
#: know is skipped with "audio codec not found" and the account then takes every codec.
_BARESIP_NAMES = {
    "PCMU": "PCMU",
    "PCMA": "PCMA",
    "G722": "G722/16000/1",
    "OPUS": "opus/48000/2",
}


def needs_baresip_codec(name: str) -> pytest.MarkDecorator:
    """Skip unless baresip and its module for ``name`` (G722, OPUS...) are installed."""
    module = CODEC_MODULES[name.upper()]
    return pytest.mark.skipif(
        BARESIP is None or not (MODULE_DIR / module).exists(),
        reason=f"baresip's {module} not installed",
    )


needs_baresip = pytest.mark.skipif(
    BARESIP is None or not all((MODULE_DIR / m).exists() for m in _NEEDED_MODULES),
    reason="baresip (Debian baresip-core, with aufile/sndfile/ctrl_tcp modules) not installed",
)

needs_baresip_srtp = pytest.mark.skipif(
    BARESIP is None or not (MODULE_DIR / "srtp.so").exists(),
    reason="baresip's srtp module (/usr/lib/baresip/modules/srtp.so) not installed",
)

RATE = 8000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EVENT = re.compile(r"received event: '(.)' \(end=([01])\)")
_counter = iter(range(1_000_000))


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    """A mono 16-bit WAV as int16 samples (what baresip's sndfile module writes)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def read_wav_8k(path: Path) -> np.ndarray:
    """A 16-bit WAV at any rate, mono or stereo, as 8 kHz mono int16 samples (baresip records
    at the codec's rate and channels: 16 kHz for G.722, 48 kHz stereo for Opus)."""
    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    pcm = raw.reshape(-1, channels).mean(axis=1)
    if rate % RATE:
        raise ValueError(f"{path}: {rate} Hz is not a multiple of {RATE}")
    if rate != RATE:
        from media.wideband import Downsampler

        pcm = Downsampler(rate // RATE).process(pcm)
    return np.clip(np.rint(pcm), -32768, 32767).astype(np.int16)


def _load_8k(path: Path) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2:
                return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    except (wave.Error, EOFError):
        pass
    from media.play import decode_audio  # any other format: resample with PyAV

    return np.asarray(decode_audio(str(path)), dtype=np.int16)


def strip_telephone_event(message: bytes) -> bytes:
    """Remove telephone-event from the SDP body of a SIP message (RFC 4566 §5.14 m= format
    list, its a=rtpmap and a=fmtp lines) and fix Content-Length. Other messages pass."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep or b"telephone-event" not in body:
        return message
    text = body.decode("latin-1")
    pts = set(re.findall(r"a=rtpmap:(\d+) telephone-event/", text))
    out = []
    for line in text.split("\r\n"):
        m = re.match(r"a=(?:rtpmap|fmtp):(\d+)[ ]", line)
        if m and m.group(1) in pts:
            continue
        if line.startswith("m=audio "):
            fields = line.split(" ")
            line = " ".join(fields[:3] + [f for f in fields[3:] if f not in pts])
        out.append(line)
    new_body = "\r\n".join(out).encode("latin-1")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"content-length", b"l"):
            lines[i] = b"Content-Length: " + str(len(new_body)).encode()
    return b"\r\n".join(lines) + sep + new_body


class _SdpRelay:
    """A UDP relay in front of baresip's SIP port that strips telephone-event from what
    baresip answers (see the module docstring)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            try:
                self.sock.bind(("127.0.0.1", free_port()))
                break
            except OSError:
                continue
        self.port = self.sock.getsockname()[1]
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="baresip-sdp-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            if addr == self.target:
                if self._client is not None:
                    self.sock.sendto(strip_telephone_event(data), self._client)
            else:
                self._client = addr
                self.sock.sendto(data, self.target)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Baresip(StampedLines):
    """A real baresip callee on 127.0.0.1: auto-answers, records what it hears to a WAV file,
    optionally plays a WAV file as its microphone.

    ``answer_delay_ms``: ring that long (180 Ringing) before answering. ``codecs``: the audio
    codecs baresip accepts (``PCMU``/``PCMA``/``G722``/``OPUS``), in its order. ``telephone_event=False``: baresip's answer
    omits telephone-event (through a relay, see the module docstring). ``max_call_s``: how
    long the microphone file lasts (aufile hangs up at its end). ``max_lifetime_s``: baresip
    quits by itself after that long. ``mediaenc``: ``"srtp"`` or ``"srtp-mand"`` for SRTP
    (see the module docstring). ``register``: an AoR baresip registers (its account, at the
    AoR's host and port; digest with ``auth_pass``), e.g. at the Kamailio fixture's registrar.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        play_wav: Path | None = None,
        answer_delay_ms: int = 0,
        codecs: tuple[str, ...] = ("PCMU", "PCMA"),
        telephone_event: bool = True,
        max_call_s: float = 120.0,
        max_lifetime_s: int = 300,
        mediaenc: str | None = None,
        user: str = "baresip",
        registrar: str | None = None,
        password: str | None = None,
        regint: int = 120,
        controlled: bool = False,
        register: str | None = None,
        auth_pass: str | None = None,
    ) -> None:
        if mediaenc not in (None, "srtp", "srtp-mand"):
            raise ValueError(f"mediaenc must be None, srtp or srtp-mand, not {mediaenc!r}")
        self.mediaenc = mediaenc
        if register is not None:  # an AoR, sip:user@host:port: register there as user
            user, _, registrar = register.removeprefix("sip:").partition("@")
        if auth_pass is not None:
            password = auth_pass
        #: ``registrar`` ("127.0.0.1:5070"): baresip REGISTERs ``sip:user@registrar`` there
        #: every ``regint`` s with digest ``user``/``password`` (else it never registers).
        self.user = user
        self.registrar = registrar
        self.password = password
        self.regint = regint
        #: ``controlled``: load ctrl_tcp so that :meth:`command` (``dial``...) works.
        self.controlled = controlled
        unknown = [c for c in codecs if c.upper() not in CODEC_MODULES]
        if unknown or not codecs:
            raise ValueError(f"codecs must be some of {', '.join(CODEC_MODULES)}, not {codecs!r}")
        self.workdir = Path(workdir) / f"baresip-{next(_counter)}"
        self.play_wav = Path(play_wav) if play_wav is not None else None
        self.answer_delay_ms = answer_delay_ms
        self.codecs = tuple(c.upper() for c in codecs)
        self.telephone_event = telephone_event
        self.max_call_s = max_call_s
        self.max_lifetime_s = max_lifetime_s
        self.port = 0
        self.uri = ""
        self.sip_port = 0  # baresip's own SIP port (differs from ``port`` behind the relay)
        self.rec_dir = self.workdir / "rec"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._master: int | None = None
        self._reader: threading.Thread | None = None
        self._relay: _SdpRelay | None = None
        self._ctrl_port: int | None = None
        self._timers: list[threading.Timer] = []

    # ------------------------------------------------------------------ set-up

    def _write_config(self, sip_port: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rec_dir.mkdir(exist_ok=True)
        source = self.workdir / "microphone.wav"
        pcm = _load_8k(self.play_wav) if self.play_wav is not None else np.zeros(0, np.int16)
        pad = np.zeros(int(self.max_call_s * RATE), dtype=np.int16)
        _write_wav(source, np.concatenate([pcm, pad]))
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{sip_port}",
            "net_interface\t\t127.0.0.1",
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            f"audio_source\t\taufile,{source}",
            f"ausrc_srate\t\t{RATE}",
            f"auplay_srate\t\t{RATE}",
            "ausrc_channels\t\t1",
            "auplay_channels\t\t1",
            "audio_buffer\t\t20-160",
            f"rtp_ports\t\t{BARESIP_RTP_BASE}-{BARESIP_RTP_BASE + 2999}",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t0-0",
            "rtp_stats\t\tyes",
            "statmode_default\toff",
            f"module_path\t\t{MODULE_DIR}",
            *sorted(
                {f"module\t\t\t{CODEC_MODULES[c]}" for c in self.codecs} | {"module\t\t\tg711.so"}
            ),
            "module\t\t\tsndfile.so",
            "module\t\t\taufile.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            f"snd_path\t\t{self.rec_dir}",
        ]
        answermode = "auto"
        if self.mediaenc is not None:
            lines.append("module\t\t\tsrtp.so")
        if self.answer_delay_ms > 0:
            answermode = "manual"
        if self.answer_delay_ms > 0 or self.controlled:
            self._ctrl_port = free_port(socket.SOCK_STREAM)
            lines += [
                "module_app\t\tctrl_tcp.so",
                f"ctrl_tcp_listen\t\t127.0.0.1:{self._ctrl_port}",
            ]
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        codecs = ",".join(_BARESIP_NAMES[c] for c in self.codecs)
        regint = self.regint if self.registrar else 0
        params = f"regint={regint};answermode={answermode};audio_codecs={codecs}"
        if self.mediaenc is not None:
            params += f";mediaenc={self.mediaenc}"
        if self.password is not None:
            params += f";auth_pass={self.password}"
        aor = f"sip:{self.user}@{self.registrar or '127.0.0.1'}"
        (self.workdir / "accounts").write_text(f"<{aor}>;{params}\n")

    def _spawn(self) -> bool:
        assert BARESIP is not None
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [BARESIP, "-f", str(self.workdir), "-t", str(self.max_lifetime_s)],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            cwd=self.workdir,
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._read, name="baresip-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            text = self.log()
            if "baresip is ready." in text:
                return True
            if self.proc.poll() is not None or "init failed" in text:
                break
            time.sleep(0.02)
        self._terminate()
        return False

    def start(self) -> Baresip:
        """Write the config and run baresip; retries on another port if the one picked was
        taken meanwhile. Raises RuntimeError (with baresip's log) if it does not come up."""
        for _ in range(3):
            self.sip_port = free_port()
            self._write_config(self.sip_port)
            with self._lock:
                self._lines.clear()
            if self._spawn():
                break
        else:
            raise RuntimeError(f"baresip did not start:\n{self.log()}")
        if "audio codec not found" in self.log():  # it would answer with any codec
            self._terminate()
            raise RuntimeError(f"baresip refused the codec list {self.codecs}:\n{self.log()}")
        self.port = self.sip_port
        if not self.telephone_event:
            self._relay = _SdpRelay(("127.0.0.1", self.sip_port))
            self.port = self._relay.port
        self.uri = f"sip:baresip@127.0.0.1:{self.port}"
        return self

    def _read(self) -> None:
        master = self._master
        assert master is not None
        buf = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once baresip exits and the slave side closes
                break
            if not data:
                break
            now = time.monotonic()
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
                with self._lock:
                    self._lines.append((now, line))
                if "Incoming call from" in line and self.answer_delay_ms > 0:
                    timer = threading.Timer(self.answer_delay_ms / 1000.0, self._accept)
                    timer.daemon = True
                    self._timers.append(timer)
                    timer.start()

    def _accept(self) -> None:
        """``accept`` answers the ringing call."""
        self.command("accept")

    def command(self, name: str, params: str = "") -> None:
        """One ctrl_tcp command (JSON in a netstring): ``dial`` with a SIP URI places a call,
        ``hangup`` ends it. Needs ``controlled=True`` (or ``answer_delay_ms``)."""
        assert self._ctrl_port is not None, "baresip started without ctrl_tcp (controlled=True)"
        payload = json.dumps({"command": name, "params": params, "token": name}).encode()
        try:
            with socket.create_connection(("127.0.0.1", self._ctrl_port), timeout=2) as conn:
                conn.sendall(str(len(payload)).encode() + b":" + payload + b",")
                conn.recv(4096)
        except OSError as exc:
            with self._lock:
                self._lines.append((time.monotonic(), f"[fixture] ctrl_tcp {name} failed: {exc}"))

    # ------------------------------------------------------------------ tear-down

    def _terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # baresip hangs up, sndfile closes its WAVs
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if self._master is not None:
            os.close(self._master)
            self._master = None

    def stop(self) -> None:
        """Stop baresip (it hangs up any call) and flush the recording. Idempotent."""
        for timer in self._timers:
            timer.cancel()
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        self._terminate()

    # ------------------------------------------------------------------ results

    def recordings(self, kind: str = "dec") -> list[Path]:
        """Every ``dump-*-{kind}.wav`` so far, oldest first (``dec``: received, ``enc``: sent)."""
        return sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def recording(self) -> Path | None:
        """The WAV of what baresip received in its latest call: 8 kHz mono 16-bit PCM of the
        decoded audio packets, back to back (see the module docstring). ``None`` if no call."""
        files = self.recordings("dec")
        return files[-1] if files else None

    def dtmf_events(self) -> list[tuple[str, bool, float]]:
        """``(digit, end, time.monotonic() when logged)`` for each RFC 4733 event start
        (``end=False``) and end baresip logged."""
        with self._lock:
            lines = list(self._lines)
        out = []
        for t, line in lines:
            m = _EVENT.search(line)
            if m:
                out.append((m.group(1), m.group(2) == "1", t))
        return out

    def received_dtmf(self) -> list[tuple[str, float]]:
        """Digits baresip received as RFC 4733 events, with the ``time.monotonic()`` at which
        it logged each event's first packet. In-band digits are not detected by baresip:
        run a detector over :meth:`recording` for those."""
        out: list[tuple[str, float]] = []
        open_digit: str | None = None
        for digit, end, t in self.dtmf_events():
            if not end:
                out.append((digit, t))
                open_digit = digit
            elif open_digit != digit:  # an end without a start seen: count it once
                out.append((digit, t))
                open_digit = None
            else:
                open_digit = None
        return out

    def __repr__(self) -> str:
        return f"<Baresip {self.uri or 'not started'} in {self.workdir}>"


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Callable[..., Baresip]]:
    """``baresip(**kw)`` starts a :class:`Baresip` (keywords as its constructor); every one
    started is stopped at teardown."""
    started: list[Baresip] = []

    def start(**kw: object) -> Baresip:
        peer = Baresip(tmp_path, **kw)  # type: ignore[arg-type]
        started.append(peer)
        return peer.start()

    yield start
    for peer in started:
        peer.stop()
