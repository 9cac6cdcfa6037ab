"""A real linphonec callee on 127.0.0.1 (Debian ``linphone-cli``, liblinphone 5.1).

How linphonec 5.1 is driven here (issue 17: linphone as a direct callee):

* A private ``HOME`` (liblinphone keeps its SQLite database under
  ``~/.local/share/linphone``; the directory is created first or the core never starts) and
  a private configuration file (``linphonec -c FILE``): ``[sip] sip_port`` a free port,
  ``bind_address=127.0.0.1`` and ``guess_hostname=0`` with a loopback ``contact`` (so neither
  the Contact nor the SDP carry the machine's LAN address), TCP/TLS off, RFC 4733 digits
  (``use_rfc2833=1``); ``[rtp] audio_rtp_port`` a free even port; echo cancellation off.
* linphonec only runs its core loop when its stdin is a terminal: with a pipe it blocks in
  its line reader and never even listens. So it runs on a pseudo-terminal; a thread reads the
  console (each line stamped with ``time.monotonic()``) and commands are written to it.
* No sound card here: ``soundcard use files`` makes it play ``play <wav>`` as its microphone
  and write what it receives to ``record <wav>`` (liblinphone's file mode; without a play file
  it sends silence).
* Codecs: ``codec list`` is read and every codec not asked for is disabled (``codec disable
  N``), the ones asked for enabled; linphone 5.1 has opus, PCMU, PCMA and G722 (off by
  default).
* ``-a``: auto-answer. Console lines the tests look at: ``Receiving new incoming call``,
  ``Call N ... connected``, ``Call N ... ended``, ``Receiving tone X`` (an RFC 4733 digit).
* ``terminate`` hangs up the current call (the callee's BYE).

Every process and thread is bounded: start-up waits at most 8 s for the SIP port to be bound,
:meth:`stop` sends ``quit``, then kills after 5 s.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _bound_ports, free_port
from tests.peers._console import StampedLines

__all__ = ["Linphone", "linphone", "needs_linphone"]

LINPHONEC = shutil.which("linphonec")

needs_linphone = pytest.mark.skipif(
    LINPHONEC is None, reason="linphonec (Debian linphone-cli) not installed"
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CODEC = re.compile(r"^\s*(\d+): (\S+) \((\d+)\) (enabled|disabled)")
_TONE = re.compile(r"Receiving tone (\S)")
_counter = iter(range(1_000_000))


class Linphone(StampedLines):
    """One linphonec, auto-answering on ``sip:linphone@127.0.0.1:<port>``.

    ``codecs``: the audio codecs it may answer with (linphone's names: ``PCMU``, ``PCMA``,
    ``G722``, ``opus``), matched without case. ``play_wav``: what it sends (its microphone;
    a WAV file, 8 kHz or 16 kHz mono). ``record``: write what it receives to
    :attr:`recording_path`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        codecs: tuple[str, ...] = ("PCMU",),
        play_wav: Path | None = None,
        record: bool = True,
    ) -> None:
        if not codecs:
            raise ValueError("codecs must name at least one codec")
        self.workdir = Path(workdir) / f"linphone-{next(_counter)}"
        self.codecs = tuple(c.upper() for c in codecs)
        self.play_wav = Path(play_wav) if play_wav is not None else None
        self.recording_path = self.workdir / "received.wav" if record else None
        self.port = 0
        self.uri = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._master: int | None = None
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ set-up

    def _write_config(self) -> Path:
        home = self.workdir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        rtp = free_port(pair=True)
        config = self.workdir / "linphonerc"
        config.write_text(
            "\n".join(
                [
                    "[sip]",
                    f"sip_port={self.port}",
                    "sip_tcp_port=-1",
                    "sip_tls_port=-1",
                    "bind_address=127.0.0.1",
                    "guess_hostname=0",
                    'contact="linphone" <sip:linphone@127.0.0.1>',
                    "default_proxy=-1",
                    "use_rfc2833=1",
                    "use_info=0",
                    "[rtp]",
                    f"audio_rtp_port={rtp}",
                    "[sound]",
                    "echocancellation=0",
                    "",
                ]
            )
        )
        return config

    def start(self) -> Linphone:
        """Write the config, run linphonec and set its codecs and files. Raises RuntimeError
        (with its console) if it does not come up."""
        assert LINPHONEC is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.port = free_port()
            if self._spawn(self._write_config()):
                break
        else:
            raise RuntimeError(f"linphonec did not start:\n{self.log()}")
        self.uri = f"sip:linphone@127.0.0.1:{self.port}"
        self.command("soundcard use files")
        if self.play_wav is not None:
            self.command(f"play {self.play_wav}")
        if self.recording_path is not None:
            self.command(f"record {self.recording_path}")
        self._set_codecs()
        return self

    def _spawn(self, config: Path) -> bool:
        assert LINPHONEC is not None
        master, slave = pty.openpty()
        env = dict(os.environ, HOME=str(self.workdir / "home"))
        self.proc = subprocess.Popen(
            [
                LINPHONEC,
                "-c",
                str(config),
                "-a",
                "-d",
                "4",
                "-l",
                str(self.workdir / "linphone.log"),
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        with self._lock:
            self._lines.clear()
        self._reader = threading.Thread(target=self._read, name="linphonec-console", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            if self.port in _bound_ports("udp"):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self._terminate()
        return False

    def _set_codecs(self) -> None:
        mark = len(self.lines())
        self.command("codec list")
        codecs: dict[int, str] = {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            codecs = {}
            for _, line in self.lines()[mark:]:
                m = _CODEC.match(line)
                if m:
                    codecs[int(m.group(1))] = m.group(2).upper()
            if codecs and "linphonec>" in self.lines()[-1][1]:
                break
            time.sleep(0.05)
        missing = set(self.codecs) - set(codecs.values())
        if missing:
            raise RuntimeError(
                f"linphonec has no {sorted(missing)}; it lists {sorted(set(codecs.values()))}"
            )
        for index, name in sorted(codecs.items()):
            self.command(f"codec {'enable' if name in self.codecs else 'disable'} {index}")

    def command(self, text: str) -> None:
        """Type a command at linphonec's prompt."""
        assert self._master is not None
        os.write(self._master, text.encode() + b"\n")

    def _read(self) -> None:
        master = self._master
        assert master is not None
        buf = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once linphonec exits and the slave side closes
                break
            if not data:
                break
            now = time.monotonic()
            buf += data.replace(b"\r", b"")
            *complete, buf = buf.split(b"\n")
            with self._lock:
                for raw in complete:
                    self._lines.append((now, _ANSI.sub("", raw.decode("utf-8", "replace"))))
                if buf.startswith(b"linphonec>") or b"linphonec> " in buf:
                    self._lines.append((now, _ANSI.sub("", buf.decode("utf-8", "replace"))))
                    buf = b""

    # ------------------------------------------------------------------ tear-down

    def _terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                self.command("quit")
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if self._master is not None:
            os.close(self._master)
            self._master = None

    def stop(self) -> None:
        """Quit linphonec (it hangs up any call and closes the recording). Idempotent."""
        self._terminate()

    # ------------------------------------------------------------------ results

    def received_dtmf(self) -> list[str]:
        """RFC 4733 digits linphonec reported (``Receiving tone X``), in order."""
        return [m.group(1) for _, line in self.lines() if (m := _TONE.search(line))]

    def __repr__(self) -> str:
        return f"<Linphone {self.uri or 'not started'} in {self.workdir}>"


@pytest.fixture
def linphone(tmp_path: Path) -> Iterator[Callable[..., Linphone]]:
    """``linphone(**kw)`` starts a :class:`Linphone` (keywords as its constructor); every one
    started is stopped at teardown."""
    started: list[Linphone] = []

    def start(**kw: object) -> Linphone:
        peer = Linphone(tmp_path, **kw)  # type: ignore[arg-type]
        started.append(peer)
        return peer.start()

    yield start
    for peer in started:
        peer.stop()
