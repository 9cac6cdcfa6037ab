"""``softswitch serve | call | campaign | bench``.

``softswitch call`` places one call with the embedded user agent, prints each step as it
happens and ends with one JSON line; exit status 0 if answered, 1 if not, 2 for bad usage
(a local port already in use included). SIGINT and SIGTERM hang the call up and still print
the terminated line and the JSON summary; the exit status is the call's outcome.
``softswitch serve`` exits 2 for a bad configuration or a port already in use and 3 when
another server already owns the database or its ``node_id`` (``softswitch.store.DatabaseInUse``),
or the store cannot be opened (``softswitch.store.StoreUnavailable``: PostgreSQL unreachable).
``softswitch campaign`` dials a CSV list (``softswitch.campaign``).

``-v``/``-q`` and ``--log-format text|json`` go before or after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from sip import causes
from softswitch import __version__, logs
from softswitch.events import Answered, DigitReceived, EarlyMedia, Ringing, Terminated, Trying

if TYPE_CHECKING:
    from media.amd import AmdResult

EXIT_ANSWERED, EXIT_NOT_ANSWERED, EXIT_USAGE = 0, 1, 2
EXIT_DATABASE_IN_USE = 3


class _Parser(argparse.ArgumentParser):
    #: The subcommands' parsers by name (set on the top-level parser by build_parser), so
    #: errors found after parsing print the usage of the subcommand that was run.
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep its message
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _usage_error(args: argparse.Namespace, parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """A usage error found after parsing: the subcommand's usage, then the message; exit 2."""
    commands = getattr(parser, "commands", {})
    (commands.get(args.command) or parser).error(message)
    raise SystemExit(EXIT_USAGE)  # pragma: no cover - error() exits


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; ValueError when it is none of them."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:]
        port = int(port_text) if port_text else default_port
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host, port = text, default_port
    if not host or not 0 <= port <= 65535:
        raise ValueError(text)
    return host, port


def _hostport_arg(default_port: int):  # type: ignore[no-untyped-def]
    """An argparse type for ``HOST[:PORT]``: a bad value is an error naming the flag."""

    def parse(text: str) -> tuple[str, int]:
        try:
            return _hostport(text, default_port)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r}") from None

    parse.__name__ = "HOST[:PORT]"
    return parse


def _port_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH``, an even range of UDP ports for RTP."""
    low, sep, high = text.strip().partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        lo = hi = -1
    if not sep or not 1024 <= lo < hi <= 65535:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH (1024..65535, LOW < HIGH), got {text!r}")
    return lo, hi


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value


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


def _logging_options(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """-v/-q/--log-format, on the top-level parser and again on each subcommand (their own
    destinations there: a subcommand's namespace would overwrite the top-level values)."""
    prefix = "sub_" if sub else ""
    parser.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count", default=0,
                        help="more logging (repeatable: -vv for SIP traces)")
    parser.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="count", default=0,
                        help="less logging (repeatable)")
    parser.add_argument("--log-format", dest=f"{prefix}log_format", choices=("text", "json"),
                        default=None, help="log lines as text (default) or one JSON object per line")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="softswitch", description="A SIP softswitch in pure Python.")
    parser.add_argument("--version", action="version", version=f"softswitch {__version__}")
    _logging_options(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = {}

    serve = sub.add_parser("serve", help="run the HTTP call API, SIP user agent and media engine")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--http", help="HOST:PORT for the HTTP API (default 127.0.0.1:8088)")
    serve.add_argument("--sip", help="HOST:PORT for SIP (default 127.0.0.1:5060)")
    serve.add_argument("--rtp-ports", type=_port_range, metavar="LOW-HIGH",
                       help="RTP port range (default 16384-32767)")
    serve.add_argument("--db", help="SQLite file for call records (default ./softswitch.db)")
    serve.add_argument("--auth-id", help="auth id of the default account")
    serve.add_argument("--auth-token", help="auth token of the default account")
    serve.add_argument("--shutdown-mode", choices=("drain", "hangup"), help="on SIGTERM: let live calls finish, or hang them up")
    serve.add_argument("--drain-timeout", type=float, metavar="S", help="longest wait for live calls when draining")
    serve.add_argument("--cps", type=float, metavar="N", help="calls per second per account (0 = unlimited)")
    serve.add_argument("--max-concurrent", type=int, metavar="N", help="live calls at most")
    serve.add_argument("--base-url", metavar="URL", help="public URL of the API (recording links)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="worker processes: SIP port and RTP slice each, one shared HTTP port "
                            "(default: one per core with a shared store and Redis, else 1)")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor

    call = sub.add_parser("call", help="place one call and report its progress")
    call.add_argument("target", help="sip:/sips: URI, user@host, or a number (routed via --gateway)")
    call.add_argument("--from", dest="from_", required=True, metavar="NUMBER", help="caller id (From user part)")
    call.add_argument("--caller-name", help="From display name (at most 50 characters)")
    call.add_argument("--ring-timeout", type=float, default=120.0, metavar="S")
    call.add_argument("--hangup-after", type=_non_negative, default=None, metavar="S",
                      help="hang up S seconds after answer")
    call.add_argument("--header", type=_header, action="append", default=[], metavar="K=V", help="extra SIP header (repeatable)")
    call.add_argument("--transport", choices=("udp", "tcp", "tls"), help="SIP transport (a sips: target always goes over TLS)")
    call.add_argument("--tls-ca", metavar="FILE", help="CA certificates (PEM) the TLS server is verified by (default: the system's)")
    call.add_argument("--tls-cert", metavar="FILE", help="our certificate chain (PEM), for servers that ask for one")
    call.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM; default: in --tls-cert)")
    call.add_argument("--username")
    call.add_argument("--password")
    call.add_argument("--gateway", type=_hostport_arg(0), metavar="HOST[:PORT]",
                      help="route numbers through this trunk")
    call.add_argument("--sip", type=_hostport_arg(0), default=None, metavar="HOST[:PORT]", help="local SIP address (default: any free port on the address this machine would use to reach the target or --gateway; 127.0.0.1 for loopback targets)")
    call.add_argument("--rtp-ports", type=_port_range, default=None, metavar="LOW-HIGH")
    call.add_argument("--send-digits", metavar="DIGITS", help="DTMF to send: 0-9*#A-D, w=0.5 s, W=1 s, trailing @ms tone length")
    call.add_argument("--send-on-preanswer", action="store_true", help="send the digits on early media")
    call.add_argument("--dtmf-mode", choices=("auto", "rfc4733", "inband"), default="auto")
    call.add_argument("--machine-detection", choices=("true", "hangup"))
    call.add_argument("--machine-detection-time", type=int, default=5000, metavar="MS")
    call.add_argument("--play", metavar="FILE", help="play this WAV/MP3 file after answer")

    from softswitch.campaign import add_arguments as campaign_arguments

    campaign = sub.add_parser("campaign", help="dial a CSV list of calls (to, from, variables for the answer URL)")
    campaign_arguments(campaign, _hostport_arg, _port_range)

    bench = sub.add_parser("bench", help="capacity benchmarks against a sipp UAS (see benchmarks/)",
                           add_help=False)  # --help goes to the benchmarks' own parser
    bench.add_argument("args", nargs=argparse.REMAINDER)
    for name, command in (("serve", serve), ("call", call), ("campaign", campaign)):
        _logging_options(command, sub=True)
        parser.commands[name] = command
    parser.commands["bench"] = bench
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    """WARNING and up, and at ``serve`` one INFO line per call event (``softswitch.call.events``:
    dialing, ringing, answered, hangup with its cause). Each ``-v`` logs one level more (``-v``
    every INFO line, ``-vv`` DEBUG with SIP traces), each ``-q`` one less (``-q`` at ``serve``:
    no call events); before or after the subcommand."""
    verbosity = (args.verbose + getattr(args, "sub_verbose", 0)) - (args.quiet + getattr(args, "sub_quiet", 0))
    fmt = getattr(args, "sub_log_format", None) or args.log_format or "text"
    logs.setup(verbosity, fmt)
    events = logging.getLogger("softswitch.call.events")
    events.setLevel(logs.level_for(logging.INFO, verbosity) if args.command == "serve" else logging.NOTSET)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" (--help included) belongs to the benchmarks' own parser.
        return _run_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    if args.command == "call":
        return _run_call(args, parser)
    if args.command == "serve":
        return _run_serve(args, argv)
    if args.command == "campaign":
        from softswitch.campaign import run_campaign

        return run_campaign(args, lambda message: _usage_error(args, parser, message))
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


def _run_serve(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from softswitch.config import ConfigError, load_config

    overrides: dict[str, object] = {}
    for key in ("http", "sip", "auth_id", "auth_token"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.rtp_ports is not None:
        overrides["rtp_ports"] = f"{args.rtp_ports[0]}-{args.rtp_ports[1]}"
    if args.db is not None:
        overrides["db_path"] = args.db
    if args.workers is not None:
        overrides["workers"] = args.workers
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
    from softswitch.store import DatabaseInUse, StoreUnavailable
    from softswitch.workers import default_workers, supervise, worker_config

    count = default_workers(config)
    worker: tuple[int, int] | None = None
    if args.worker_index is not None:
        worker = (args.worker_index, count)
        try:
            config = worker_config(config, args.worker_index, count)
        except ValueError as exc:
            print(f"softswitch serve: {exc}", file=sys.stderr)
            return EXIT_USAGE
    elif count > 1:
        return supervise(argv, config, count)
    try:
        return run_server(config, worker=worker) or 0
    except DatabaseInUse as exc:
        print(f"softswitch serve: refusing to start: {exc}", file=sys.stderr)
        return EXIT_DATABASE_IN_USE
    except StoreUnavailable as exc:
        print(f"softswitch serve: {exc}", file=sys.stderr)
        return EXIT_DATABASE_IN_USE
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"softswitch serve: {_bind_failure(config, exc)}", file=sys.stderr)
        return EXIT_USAGE


def _bind_failure(config: object, exc: OSError) -> str:
    """One line naming the flag whose address could not be bound: the HTTP address, else
    the SIP one (each probed as its server binds it, address reuse on)."""
    candidates = [
        ("--http", "http", getattr(config, "http_host", ""), getattr(config, "http_port", 0), (socket.SOCK_STREAM,)),
        ("--sip", "sip", getattr(config, "sip_host", ""), getattr(config, "sip_port", 0),
         (socket.SOCK_DGRAM, socket.SOCK_STREAM)),
    ]
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    for flag, key, host, port, kinds in candidates:
        if not port:
            continue
        for kind in kinds:
            if _bind_fails(str(host), int(port), kind):
                return f"{flag} {_show(str(host), int(port))} ({key} in the configuration): {why.lower()}"
    return f"cannot bind: {exc}"


def _bind_fails(host: str, port: int, kind: int) -> bool:
    try:
        infos = socket.getaddrinfo(host or None, port, type=kind)
    except OSError:
        return True
    for family, socktype, proto, _, address in infos[:1]:
        with socket.socket(family, socktype, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                return True
    return False


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------- call


def _run_call(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    def usage(message: str) -> NoReturn:
        _usage_error(args, parser, message)

    if args.caller_name is not None and len(args.caller_name) > 50:
        usage("--caller-name: at most 50 characters")
    if (args.username is None) != (args.password is None):
        usage("--username and --password go together")
    if args.ring_timeout <= 0:
        usage("--ring-timeout must be positive")
    if args.tls_key and not args.tls_cert:
        usage("--tls-key needs --tls-cert")
    for option in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, option)
        if path and not os.path.isfile(path):
            usage(f"--{option.replace('_', '-')}: no such file {path!r}")
    if args.send_digits:
        from media.dtmf import DigitsError, parse_send_digits

        try:
            parse_send_digits(args.send_digits)
        except DigitsError as exc:
            usage(f"--send-digits: {exc}")
    if args.machine_detection and not 2000 <= args.machine_detection_time <= 10000:
        usage("--machine-detection-time must be 2000..10000 ms")
    source = None
    if args.play:
        # Checked (and decoded: off the event loop later would be too late) before dialling,
        # not when the callee has already answered.
        from media.play import AudioFileError, FileSource

        try:
            source = FileSource(args.play)
        except AudioFileError as exc:
            usage(f"--play: {exc}")
    gateway = args.gateway
    if gateway is not None and not gateway[1]:  # no port: 5061 for TLS, else 5060 (RFC 3261 §19.1.2)
        gateway = (gateway[0], 5061 if args.transport == "tls" else 5060)
    if args.sip is not None:
        host, port = args.sip
    else:
        first_hop = _target_host(args.target, gateway)
        host, port = (local_address_for(*first_hop) if first_hop else "127.0.0.1"), 0
    try:
        return asyncio.run(_call(args, host, port, args.rtp_ports, gateway, source))
    except (ValueError, LookupError) as exc:  # the target: no route for a number, a bad URI
        usage(str(exc))
    except _BindError as exc:
        flag = "--sip" if args.sip is not None else "the local SIP address"
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"softswitch call: {flag} {_show(host, port)}: {why.lower()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a second signal while the call was being torn down
        return EXIT_NOT_ANSWERED


class _BindError(OSError):
    """The user agent could not bind its local SIP address."""


def _emit_line(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:8.3f}] {text}", flush=True)


async def _call(args: argparse.Namespace, host: str, port: int, rtp: tuple[int, int] | None,
                gateway: tuple[str, int] | None, source: object = None) -> int:
    from media.engine import MediaConfig
    from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig

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
    ua = UserAgent(config)
    try:
        await ua.start()
    except OSError as exc:
        with contextlib.suppress(Exception):
            await ua.close(grace=0)
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise _BindError(exc.errno, exc.strerror) from exc
        raise
    loop = asyncio.get_running_loop()
    signals: list[str] = []
    live: list[Any] = []  # the call, once dial() returned
    main_task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        """SIGINT/SIGTERM: hang up (CANCEL or BYE) and let the events end the run as usual;
        a second one stops waiting."""
        signals.append(sig.name)
        if len(signals) > 1:
            if main_task is not None:
                main_task.cancel()
            return
        _emit_line(start, f"{sig.name}: hanging up")
        if live:
            asyncio.ensure_future(live[0].hangup())

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await _run_dialled(ua, args, start, summary, source, signals, live)
    except asyncio.CancelledError:
        print(json.dumps({**summary, "target": args.target, "interrupted": True}, default=str), flush=True)
        return EXIT_NOT_ANSWERED
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await ua.close()


async def _run_dialled(ua: Any, args: argparse.Namespace, start: float, summary: dict[str, object], source: Any,
                       signals: list[str], live: list[Any]) -> int:
    """Dial, print each event, fill ``summary``; ``live`` gets the call for the signal handler."""
    from softswitch.ua import Credentials

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
    live.append(call)
    if signals:  # a signal while the INVITE was going out
        asyncio.ensure_future(call.hangup())
    amd_task = None
    digits_task = None
    digits_sent = False

    async def send_digits() -> None:
        try:
            await call.send_digits(args.send_digits, mode=args.dtmf_mode)
        except Exception as exc:  # e.g. rfc4733 asked for and the callee's answer has no telephone-event
            _emit_line(start, f"digits not sent: {exc}")
            summary["digits_error"] = str(exc)
            return
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
            if source is not None and call.media is not None:
                call.media.play(source)
            if args.hangup_after is not None:
                asyncio.get_running_loop().call_later(
                    args.hangup_after, lambda: asyncio.ensure_future(call.hangup())
                )
        elif isinstance(event, DigitReceived):
            _emit_line(start, f"digit received {event.digit} ({event.duration_ms} ms, {event.source})")
        elif isinstance(event, Terminated):
            why = f": {event.reason}" if event.hangup_source == "error" and event.reason else ""
            _emit_line(start, f"terminated {event.cause} (SIP {event.sip_status}, by {event.hangup_source}{why})")
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
            "reason": end.reason,
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
