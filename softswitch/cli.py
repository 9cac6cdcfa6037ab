"""``softswitch serve | call | bench``.

``softswitch call`` places one call with the embedded user agent, prints each step as it
happens and ends with one JSON line; exit status 0 if answered, 1 if not, 2 for bad usage.
``softswitch serve`` exits 2 for a bad configuration and 3 when another server already owns the
database (``softswitch.store.DatabaseInUse``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from sip import causes
from softswitch.events import Answered, DigitReceived, EarlyMedia, Ringing, Terminated, Trying

if TYPE_CHECKING:
    from media.amd import AmdResult

EXIT_ANSWERED, EXIT_NOT_ANSWERED, EXIT_USAGE = 0, 1, 2
EXIT_DATABASE_IN_USE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep its message
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def local_address_for(host: str, port: int = 5060) -> str:
    """The address this machine would send from to reach ``host``: the source address the
    kernel picks for a UDP socket connected there (``connect`` on UDP only selects a route;
    no packet leaves). A loopback target gives a loopback address. A name is resolved first;
    when that or the route fails, ``127.0.0.1``."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return "127.0.0.1"
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)
                return str(probe.getsockname()[0])
        except OSError:  # no route to it in this family
            continue
    return "127.0.0.1"


def _target_host(target: str, gateway: tuple[str, int] | None) -> tuple[str, int] | None:
    """Where a call goes first: the trunk, else the target URI's host (none for a number)."""
    if gateway is not None:
        return gateway
    from sip.uri import SipUri, UriError

    if target.lower().startswith(("sip:", "sips:")):
        text = target
    elif "@" in target:
        text = f"sip:{target}"
    else:
        return None  # a bare number: routed through --gateway, nowhere by itself
    try:
        uri = SipUri.parse(text)
    except UriError:
        return None
    return uri.host, uri.port or 5060


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be NAME=VALUE, got {text!r}")
    name = name.strip()
    if not all(c.isalnum() or c in "-_.!%*+`'~" for c in name):
        raise argparse.ArgumentTypeError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError("header values cannot contain line breaks")
    return name, value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="softswitch", description="A SIP softswitch in pure Python.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for SIP traces)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the HTTP call API, SIP user agent and media engine")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--http", help="HOST:PORT for the HTTP API (default 127.0.0.1:8088)")
    serve.add_argument("--sip", help="HOST:PORT for SIP (default 127.0.0.1:5060)")
    serve.add_argument("--rtp-ports", help="LOW-HIGH RTP port range (default 16384-32767)")
    serve.add_argument("--db", help="SQLite file for call records (default ./softswitch.db)")
    serve.add_argument("--auth-id", help="auth id of the default account")
    serve.add_argument("--auth-token", help="auth token of the default account")
    serve.add_argument("--shutdown-mode", choices=("drain", "hangup"), help="on SIGTERM: let live calls finish, or hang them up")
    serve.add_argument("--drain-timeout", type=float, metavar="S", help="longest wait for live calls when draining")
    serve.add_argument("--cps", type=float, metavar="N", help="calls per second per account (0 = unlimited)")
    serve.add_argument("--max-concurrent", type=int, metavar="N", help="live calls at most")
    serve.add_argument("--base-url", metavar="URL", help="public URL of the API (recording links)")

    call = sub.add_parser("call", help="place one call and report its progress")
    call.add_argument("target", help="sip:/sips: URI, user@host, or a number (routed via --gateway)")
    call.add_argument("--from", dest="from_", required=True, metavar="NUMBER", help="caller id (From user part)")
    call.add_argument("--caller-name", help="From display name (at most 50 characters)")
    call.add_argument("--ring-timeout", type=float, default=120.0, metavar="S")
    call.add_argument("--hangup-after", type=float, default=None, metavar="S", help="hang up S seconds after answer")
    call.add_argument("--header", type=_header, action="append", default=[], metavar="K=V", help="extra SIP header (repeatable)")
    call.add_argument("--transport", choices=("udp", "tcp", "tls"), help="SIP transport (a sips: target always goes over TLS)")
    call.add_argument("--tls-ca", metavar="FILE", help="CA certificates (PEM) the TLS server is verified by (default: the system's)")
    call.add_argument("--tls-cert", metavar="FILE", help="our certificate chain (PEM), for servers that ask for one")
    call.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM; default: in --tls-cert)")
    call.add_argument("--username")
    call.add_argument("--password")
    call.add_argument("--gateway", metavar="HOST[:PORT]", help="route numbers through this trunk")
    call.add_argument("--sip", default=None, metavar="HOST[:PORT]", help="local SIP address (default: any free port on the address this machine would use to reach the target or --gateway; 127.0.0.1 for loopback targets)")
    call.add_argument("--rtp-ports", default=None, metavar="LOW-HIGH")
    call.add_argument("--send-digits", metavar="DIGITS", help="DTMF to send: 0-9*#A-D, w=0.5 s, W=1 s, trailing @ms tone length")
    call.add_argument("--send-on-preanswer", action="store_true", help="send the digits on early media")
    call.add_argument("--dtmf-mode", choices=("auto", "rfc4733", "inband"), default="auto")
    call.add_argument("--machine-detection", choices=("true", "hangup"))
    call.add_argument("--machine-detection-time", type=int, default=5000, metavar="MS")
    call.add_argument("--play", metavar="FILE", help="play this WAV/MP3 file after answer")

    bench = sub.add_parser("bench", help="capacity benchmarks against a sipp UAS (see benchmarks/)",
                           add_help=False)  # --help goes to the benchmarks' own parser
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" (--help included) belongs to the benchmarks' own parser.
        return _run_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "call":
        return _run_call(args, parser)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "bench":
        return _run_bench(args.args)
    parser.error("unknown command")
    return EXIT_USAGE


def _run_bench(args: Sequence[str]) -> int:
    """``softswitch bench`` runs the benchmark program (``python -m benchmarks``) as its own
    process: benchmarks import the package, never the reverse (docs/ARCHITECTURE.md)."""
    import subprocess

    return subprocess.call([sys.executable, "-m", "benchmarks", *args])


# ---------------------------------------------------------------------------- serve


def _run_serve(args: argparse.Namespace) -> int:
    from softswitch.config import ConfigError, load_config

    overrides: dict[str, object] = {}
    for key in ("http", "sip", "rtp_ports", "auth_id", "auth_token"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.db is not None:
        overrides["db_path"] = args.db
    for flag, key in (("shutdown_mode", "shutdown_mode"), ("drain_timeout", "drain_timeout_s"),
                      ("cps", "limits.cps"), ("max_concurrent", "limits.max_concurrent"), ("base_url", "base_url")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    try:
        config = load_config(args.config, overrides=overrides)
    except (ConfigError, OSError) as exc:
        print(f"softswitch serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from softswitch.server import run_server
    from softswitch.store import DatabaseInUse

    try:
        return run_server(config) or 0
    except DatabaseInUse as exc:
        print(f"softswitch serve: refusing to start: {exc}", file=sys.stderr)
        return EXIT_DATABASE_IN_USE


# ---------------------------------------------------------------------------- call


def _run_call(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.caller_name is not None and len(args.caller_name) > 50:
        parser.error("--caller-name: at most 50 characters")
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    if args.ring_timeout <= 0:
        parser.error("--ring-timeout must be positive")
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    for option in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, option)
        if path and not os.path.isfile(path):
            parser.error(f"--{option.replace('_', '-')}: no such file {path!r}")
    if args.send_digits:
        from media.dtmf import DigitsError, parse_send_digits

        try:
            parse_send_digits(args.send_digits)
        except DigitsError as exc:
            parser.error(str(exc))
    if args.machine_detection and not 2000 <= args.machine_detection_time <= 10000:
        parser.error("--machine-detection-time must be 2000..10000 ms")
    try:
        gateway = _hostport(args.gateway, 5061 if args.transport == "tls" else 5060) if args.gateway else None
        if args.sip is not None:
            host, port = _hostport(args.sip, 0)
        else:
            first_hop = _target_host(args.target, gateway)
            host, port = (local_address_for(*first_hop) if first_hop else "127.0.0.1"), 0
        rtp = tuple(int(x) for x in args.rtp_ports.split("-")) if args.rtp_ports else None
    except ValueError:
        parser.error("bad HOST:PORT or LOW-HIGH value")
        return EXIT_USAGE
    try:
        return asyncio.run(_call(args, host, port, rtp, gateway))
    except (ValueError, LookupError) as exc:
        print(f"softswitch call: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_NOT_ANSWERED


def _emit_line(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:8.3f}] {text}", flush=True)


async def _call(args: argparse.Namespace, host: str, port: int, rtp: tuple[int, ...] | None, gateway: tuple[str, int] | None) -> int:
    from media.engine import MediaConfig
    from softswitch.ua import Credentials, GatewayConfig, UserAgent, UserAgentConfig

    media = MediaConfig(bind_host=host)
    if rtp:
        media.port_min, media.port_max = rtp[0], rtp[1]
    gateways = []
    if gateway is not None:
        gateways.append(GatewayConfig(name="cli", host=gateway[0], port=gateway[1], transport=args.transport or "udp",
                                      username=args.username, password=args.password))
    # TLS (RFC 3261 §26.2): for --transport tls, a sips: target or any --tls-* flag; outbound
    # only unless --tls-cert is given (then a listener on any free port serves it too).
    tls = args.transport == "tls" or args.target.lower().startswith("sips:") or bool(args.tls_ca or args.tls_cert)
    config = UserAgentConfig(host=host, port=port, gateways=gateways, media=media,
                             transports=("udp", "tcp", "tls") if tls else ("udp", "tcp"),
                             tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, tls_port=0)
    start = time.monotonic()
    summary: dict[str, object] = {}
    async with UserAgent(config) as ua:
        credentials = Credentials(args.username, args.password) if args.username else None
        call = await ua.dial(
            args.target,
            from_user=args.from_,
            caller_name=args.caller_name,
            headers=dict(args.header),
            ring_timeout=args.ring_timeout,
            credentials=credentials,
            transport=args.transport,
        )
        amd_task = None
        digits_task = None
        digits_sent = False

        async def send_digits() -> None:
            await call.send_digits(args.send_digits, mode=args.dtmf_mode)
            _emit_line(start, f"digits sent {args.send_digits}")

        async for event in call.events():
            if isinstance(event, Trying):
                _emit_line(start, f"trying {call.session.invite.uri} ({call.transport})")
            elif isinstance(event, Ringing):
                _emit_line(start, f"ringing {event.status} {event.reason}")
            elif isinstance(event, EarlyMedia):
                _emit_line(start, f"early media {event.status}")
                if args.send_digits and args.send_on_preanswer and not digits_sent:
                    digits_sent = True
                    digits_task = asyncio.ensure_future(send_digits())
            elif isinstance(event, Answered):
                _emit_line(start, f"answered {event.status}")
                if args.send_digits and not digits_sent:
                    digits_sent = True
                    digits_task = asyncio.ensure_future(send_digits())
                if args.machine_detection:
                    amd_task = asyncio.ensure_future(_machine_detection(call, args, start, summary))
                if args.play and call.media is not None:
                    from media.play import FileSource

                    # Decode off the event loop: a long file would stall the media clock.
                    source = await asyncio.to_thread(FileSource, args.play)
                    call.media.play(source)
                if args.hangup_after is not None:
                    asyncio.get_running_loop().call_later(
                        args.hangup_after, lambda: asyncio.ensure_future(call.hangup())
                    )
            elif isinstance(event, DigitReceived):
                _emit_line(start, f"digit received {event.digit} ({event.duration_ms} ms, {event.source})")
            elif isinstance(event, Terminated):
                _emit_line(start, f"terminated {event.cause} (SIP {event.sip_status}, by {event.hangup_source})")
        for task in (digits_task, amd_task):
            if task is not None and not task.done():
                task.cancel()
        end = call.terminated
        assert end is not None
        summary.update(
            {
                "call_uuid": call.uuid,
                "call_id": call.call_id,
                "target": args.target,
                "answered": call.answered_at is not None,
                "sip_status": end.sip_status,
                "hangup_cause": end.cause,
                "hangup_cause_code": causes.Q850_CODES.get(end.cause),
                "hangup_source": end.hangup_source,
                "duration": round(call.duration, 3),
                "ring_time": round(((call.answered_at or call.ended_at or 0) - (call.ringing_at or 0)), 3) if call.ringing_at else None,
                "digits_received": "".join(d.digit for d in call.digits),
                "media": call.final_stats or {},
            }
        )
    print(json.dumps(summary, default=str), flush=True)
    return EXIT_ANSWERED if summary["answered"] else EXIT_NOT_ANSWERED


async def _machine_detection(call, args, start: float, summary: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Run the answering-machine detector on the call's received audio."""
    from media.amd import AmdParams
    from softswitch.amd import run_detection

    result = await run_detection(call, AmdParams(total_ms=args.machine_detection_time))
    if result is None:
        return
    summary["machine_detection"] = _amd_summary(result)
    _emit_line(start, f"machine detection: {'machine' if result.machine else 'human'} ({result.reason}, {result.decided_at_ms} ms)")
    if result.machine and args.machine_detection == "hangup":
        await call.hangup(causes.MACHINE_DETECTED, "caller")


def _amd_summary(result: AmdResult) -> dict[str, object]:
    """The decision as the JSON summary shows it: the detector's own field names
    (:class:`media.amd.AmdResult`), the beep fields only once a beep was heard.

    ``Machine`` (``"true"``/``"false"``) stays beside them: the summary has always carried that
    key and scripts (``tests/test_amd_calls.py``) read it.
    """
    view = {k: v for k, v in dataclasses.asdict(result).items() if v is not None}
    return {"Machine": "true" if result.machine else "false", **view}


if __name__ == "__main__":
    raise SystemExit(main())
