"""A real Kamailio (Debian ``kamailio``, 5.6) on 127.0.0.1: proxy and registrar for tests.

The test starts it with a configuration generated here, in a private directory (``-f``
config, ``-Y`` runtime dir, ``-P`` pid file, ``-w`` working dir), in the foreground with
its log on stderr (``-DD -E``, written to ``kamailio.log`` there) and on one free port for
UDP and TCP. What the configuration does:

* **digest** (``auth`` module, no database): one user with a fixed password in the
  configuration (``pv_proxy_authenticate``/``pv_www_authenticate`` against it). Requests
  *from* that user are challenged: INVITE with 407, and (``challenge_bye``) BYE with 407
  too (in-dialog, after ``loose_route``); REGISTER with 401. Requests from anyone else
  (the callee's BYE) pass.
* **proxy**: ``record_route()`` on INVITE, in-dialog requests by ``loose_route()``;
  the Request-URI user picks the new Request-URI from ``routes`` (user -> URI), else the
  registrar's ``lookup("location")``, else 404.
* **registrar**: ``registrar`` + ``usrloc`` in memory (``db_mode 0``); ``kamcmd ul.dump``
  (over the ``ctl`` socket in the private directory) shows the bindings
  (:meth:`Kamailio.contacts`).
* TCP with ``tcp_accept_aliases=yes`` (RFC 5923-style reuse when our Via says ``alias``).
* TLS (``tls=(cert, key)``): the ``tls`` module on a second port (:attr:`Kamailio.tls_port`)
  with that certificate (``tls.cfg`` in the private directory); it verifies nobody.

Bounded: start-up waits at most 10 s for both ports, :meth:`stop` sends SIGTERM and kills
after 5 s; every ``kamcmd`` call has a timeout.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_bound

__all__ = ["Kamailio", "kamailio", "needs_kamailio"]

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
KAMCMD = shutil.which("kamcmd") or (
    "/usr/sbin/kamcmd" if Path("/usr/sbin/kamcmd").exists() else None
)
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")

needs_kamailio = pytest.mark.skipif(
    KAMAILIO is None or KAMCMD is None or not (MODULES / "registrar.so").exists(),
    reason="kamailio (Debian kamailio) not installed",
)

REALM = "softswitch.test"

_CONFIG = r"""#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:@PORT@
listen=tcp:127.0.0.1:@PORT@
alias="127.0.0.1:@PORT@"
@TLS_CORE@
tcp_accept_aliases=yes
tcp_crlf_ping=@CRLF_PING@
tcp_connection_lifetime=120
dns=no
rev_dns=no
use_dns_cache=no

loadpath "@MODULES@"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "auth.so"
@TLS_MODULE@

modparam("ctl", "binrpc", "unix:@DIR@/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "default_expires", @DEFAULT_EXPIRES@)
modparam("registrar", "min_expires", @MIN_EXPIRES@)
modparam("registrar", "max_expires", @MAX_EXPIRES@)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("auth", "nonce_expire", 300)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    xlog("L_INFO", "REQ $rm $ru from $si:$sp/$pr fU=$fU\n");
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {
        sl_send_reply("200", "Keepalive");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            if (is_method("BYE") && @CHALLENGE_BYE@ && $fU == "@USER@") {
                route(AUTH_PROXY);
            }
            route(RELAY);
        }
        if (is_method("ACK")) {
            if (t_check_trans()) {
                route(RELAY);
            }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    t_check_trans();
    if (is_method("REGISTER")) {
        route(REGISTRAR);
    }
    if (is_method("INVITE") && $fU == "@USER@") {
        route(AUTH_PROXY);
    }
    if (is_method("INVITE|SUBSCRIBE")) {
        record_route();
    }
@ROUTES@
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    route(RELAY);
}

route[AUTH_PROXY] {
    if (!pv_proxy_authenticate("@REALM@", "@PASSWORD@", "0")) {
        xlog("L_INFO", "CHALLENGE $rm from $fU (407)\n");
        proxy_challenge("@REALM@", "0");
        exit;
    }
    if ($au != "@USER@") {
        sl_send_reply("403", "Forbidden");
        exit;
    }
    xlog("L_INFO", "AUTHORIZED $rm from $au\n");
    consume_credentials();
}

route[REGISTRAR] {
    if (!pv_www_authenticate("@REALM@", "@PASSWORD@", "0")) {
        xlog("L_INFO", "CHALLENGE REGISTER from $fU (401)\n");
        www_challenge("@REALM@", "0");
        exit;
    }
    if ($au != "@USER@" || $tU != "@USER@") {
        sl_send_reply("403", "Forbidden");
        exit;
    }
    consume_credentials();
    xlog("L_INFO", "REGISTER $tU expires=$hdr(Expires) contact=$ct\n");
    if (!save("location")) {
        sl_reply_error();
    }
    exit;
}

route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}
"""


class Kamailio:
    """One Kamailio process with its generated configuration in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "alice",
        password: str = "secret",
        routes: dict[str, str] | None = None,
        challenge_bye: bool = True,
        default_expires: int = 3600,
        min_expires: int = 1,
        max_expires: int = 3600,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        crlf_pong: bool = True,
    ):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.realm = REALM
        self.routes = dict(routes or {})
        self.tls_port = free_port(socket.SOCK_STREAM) if tls is not None else None
        tls_core = tls_module = ""
        if tls is not None:
            (self.dir / "tls.cfg").write_text(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                f"require_certificate = no\ncertificate = {tls[0]}\nprivate_key = {tls[1]}\n\n"
                "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                "require_certificate = no\n"
            )
            tls_core = (
                f"enable_tls=yes\nlisten=tls:127.0.0.1:{self.tls_port}\n"
                f'alias="127.0.0.1:{self.tls_port}"\nalias="localhost:{self.tls_port}"'
            )
            tls_module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{self.dir}/tls.cfg")'
        self.log_path = self.dir / "kamailio.log"
        self.config_path = self.dir / "kamailio.cfg"
        route_lines = []
        for number, target in self.routes.items():
            # The Request-URI becomes the callee's (baresip answers only its own).
            route_lines.append(f'    if ($rU == "{number}") {{ $ru = "{target}"; route(RELAY); }}')
        text = _CONFIG
        for key, value in {
            "@PORT@": str(self.port),
            "@MODULES@": str(MODULES),
            "@DIR@": str(self.dir),
            "@USER@": user,
            "@PASSWORD@": password,
            "@REALM@": REALM,
            "@CHALLENGE_BYE@": "1" if challenge_bye else "0",
            "@ROUTES@": "\n".join(route_lines),
            "@DEFAULT_EXPIRES@": str(default_expires),
            "@MIN_EXPIRES@": str(min_expires),
            "@MAX_EXPIRES@": str(max_expires),
            "@TLS_CORE@": tls_core,
            "@TLS_MODULE@": tls_module,
            # RFC 5626 keep-alives: answer a CRLFCRLF ping with a CRLF pong (Kamailio's
            # default), or stay silent (a peer whose pongs never come).
            "@CRLF_PING@": "yes" if crlf_pong else "no",
        }.items():
            text = text.replace(key, value)
        self.config_path.write_text(text)
        self._log = self.log_path.open("ab")
        assert KAMAILIO is not None
        self.args = [
            KAMAILIO, "-DD", "-E", "-f", str(self.config_path), "-Y", str(self.dir),
            "-P", str(self.dir / "kamailio.pid"), "-w", str(self.dir), "-m", "32", "-M", "4",
        ]  # fmt: skip
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_bound(self.port, proc=self.proc)
            wait_bound(self.port, tcp=True, proc=self.proc)
            if self.tls_port is not None:
                wait_bound(self.tls_port, tcp=True, proc=self.proc)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            self.stop()
            raise AssertionError(f"kamailio exited {self.proc.returncode}:\n{self.log()[-3000:]}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, user: str, transport: str = "udp") -> str:
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user}@127.0.0.1:{self.port}{suffix}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kamcmd(self, *command: str, timeout: float = 5.0) -> str:
        assert KAMCMD is not None
        done = subprocess.run(
            [KAMCMD, "-s", f"unix:{self.dir}/kamailio_ctl", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.stdout + done.stderr

    def contacts(self, user: str | None = None) -> list[str]:
        """The Contact URIs usrloc holds for ``user`` (``kamcmd ul.dump``)."""
        wanted = user or self.user
        out = self.kamcmd("ul.dump")
        contacts: list[str] = []
        current = None
        for line in out.splitlines():
            text = line.strip()
            if text.startswith("AoR:"):
                current = text.split(":", 1)[1].strip()
            elif (
                text.startswith("Address:")
                and current is not None
                and current.split("@")[0] == wanted
            ):
                contacts.append(text.split(":", 1)[1].strip())
        return contacts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator:
    """``kamailio(**kw)`` starts one (see :class:`Kamailio`); all stop after the test."""
    started: list[Kamailio] = []

    def start(**kw: object) -> Kamailio:
        k = Kamailio(tmp_path / f"kamailio{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(k)
        return k

    yield start
    for k in started:
        k.stop()
