"""``softswitch campaign FILE.csv``: dial a list of calls, without a server.

Each row of the CSV is one call: ``to`` and ``from`` (required columns), every other column a
variable added to the answer URL's query string (``?name=Ann&order=42``: GET and POST
fetches both see it, beside the Plivo parameters of the request). The calls run in this
process exactly as ``softswitch serve`` runs a Plivo "Make a call" request
(:class:`softswitch.call.CallManager` with the Plivo dialect: the answer URL's Plivo XML,
answering-machine detection, the hangup/machine-detection callbacks, the configuration's
gateways), through the embedded user agent, at most ``--concurrency`` at once and
``--cps`` new calls per second.

Results are appended to ``--results`` (default ``FILE.results.csv``), one line per row as
each call ends (flushed and synced): ``row`` (1-based data row), ``to``, ``from``,
``outcome`` (``answered``, ``machine``, ``busy``, ``no-answer``, ``failed``, ``cancelled``:
hung up by a Ctrl-C before the answer, ``invalid``: the row was refused before dialling,
``interrupted``: the process died during the call), the call's uuid, cause, SIP status,
durations and times. A journal beside it (``RESULTS.journal``) gets each row's number,
synced, before its INVITE goes out. A new run reads both: rows with a result are skipped,
rows in the journal without one died with the previous process and are recorded as
``interrupted``, not called again. So a list interrupted by Ctrl-C (live calls are hung up
and recorded) or a crash resumes where it stopped, each row called at most once.

A progress bar (tqdm, on stderr when it is a terminal) counts the outcomes; the last line on
stdout is a JSON summary. Exit status: 0 the list is done, 2 bad usage, 130 interrupted
(run the same command again to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import errno
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sip import causes

log = logging.getLogger("softswitch.campaign")

__all__ = [
    "RESULT_COLUMNS",
    "Row",
    "add_arguments",
    "classify",
    "read_rows",
    "run_campaign",
    "with_variables",
]

EXIT_DONE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

RESULT_COLUMNS = (
    "row",
    "to",
    "from",
    "outcome",
    "call_uuid",
    "hangup_cause",
    "sip_status",
    "hangup_source",
    "duration",
    "bill_duration",
    "machine",
    "initiation_time",
    "answer_time",
    "end_time",
    "error",
)
#: The outcomes the progress bar and the summary count, in display order.
OUTCOMES = (
    "answered",
    "machine",
    "busy",
    "no-answer",
    "failed",
    "cancelled",
    "invalid",
    "interrupted",
)
_NO_ANSWER = {causes.NO_ANSWER, causes.NO_USER_RESPONSE}
_CAUSE_BUSY = {causes.USER_BUSY}


@dataclass(frozen=True, slots=True)
class Row:
    number: int  #: 1-based, data rows only (the header is not counted)
    to: str
    from_: str
    variables: dict[str, str] = field(default_factory=dict)


class CampaignError(Exception):
    """The list or the results file cannot be used (a usage error, exit 2)."""


def add_arguments(
    parser: argparse.ArgumentParser,
    hostport: Callable[[int], Any],
    port_range: Callable[[str], tuple[int, int]],
) -> None:
    """The ``campaign`` subcommand's options (``cli`` passes its HOST:PORT and LOW-HIGH types)."""
    parser.add_argument(
        "file", metavar="FILE.csv", help="the list: columns to, from, then any variables"
    )
    parser.add_argument(
        "--answer-url",
        required=True,
        metavar="URL",
        help="the call application (Plivo XML), fetched on answer with the row's variables",
    )
    parser.add_argument("--answer-method", choices=("GET", "POST"), default="POST")
    parser.add_argument("--hangup-url", metavar="URL", help="Plivo hangup callback for each call")
    parser.add_argument(
        "--results", metavar="FILE", help="results CSV (default FILE.results.csv); resumes from it"
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=10, metavar="N", help="live calls at most"
    )
    parser.add_argument(
        "--cps", type=_positive_float, default=1.0, metavar="N", help="new calls per second"
    )
    parser.add_argument("--ring-timeout", type=_positive_int, default=30, metavar="S")
    parser.add_argument(
        "--time-limit",
        type=_positive_int,
        default=None,
        metavar="S",
        help="longest answered call (Plivo time_limit)",
    )
    parser.add_argument("--caller-name", help="From display name for every call")
    parser.add_argument(
        "--machine-detection",
        choices=("true", "hangup"),
        help="answering-machine detection: report it (true) or hang up on a machine",
    )
    parser.add_argument("--machine-detection-time", type=int, default=5000, metavar="MS")
    parser.add_argument(
        "--machine-detection-url", metavar="URL", help="callback with each detection result"
    )
    parser.add_argument(
        "--config", help="TOML configuration (gateways, codecs, SIP settings) as for serve"
    )
    parser.add_argument(
        "--gateway",
        type=hostport(5060),
        metavar="HOST[:PORT]",
        help="route numbers through this trunk (beside the configuration's gateways)",
    )
    parser.add_argument("--username", help="digest user name for --gateway")
    parser.add_argument("--password", help="digest password for --gateway")
    parser.add_argument(
        "--transport", choices=("udp", "tcp"), default="udp", help="transport to --gateway"
    )
    parser.add_argument(
        "--sip",
        type=hostport(0),
        metavar="HOST[:PORT]",
        help="local SIP address (default: a free port on the address that reaches --gateway, "
        "else the configuration's sip address)",
    )
    parser.add_argument("--rtp-ports", type=port_range, metavar="LOW-HIGH")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


# ------------------------------------------------------------------------------- the list


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """The list's rows; :class:`CampaignError` for a missing file or column, or an empty cell."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip() for n in reader.fieldnames or []]
            missing = {"to", "from"} - set(names)
            if missing:
                raise CampaignError(
                    f"{path}: missing column(s) {', '.join(sorted(missing))} (header: {names})"
                )
            rows = []
            for number, raw in enumerate(reader, start=1):
                cells = {
                    (k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None
                }
                if not any(cells.values()):
                    continue  # a blank line
                to, from_ = cells.pop("to"), cells.pop("from")
                if not to or not from_:
                    raise CampaignError(f"{path}: row {number}: to and from are required")
                rows.append(Row(number, to, from_, {k: v for k, v in cells.items() if k}))
            return rows
    except OSError as exc:
        raise CampaignError(f"{path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: not a CSV file: {exc}") from None


def with_variables(url: str, variables: dict[str, str]) -> str:
    """``url`` with ``variables`` added to its query string (a row's value wins)."""
    if not variables:
        return url
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in variables
    ]
    query += list(variables.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# ------------------------------------------------------------------------------- results


def _load_results(path: Path, rows: dict[int, Row]) -> dict[int, str]:
    """Rows already recorded (number -> outcome); checks they belong to this list."""
    done: dict[int, str] = {}
    if not path.exists():
        return done
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            try:
                number = int(rec.get("row") or "")
            except ValueError:
                continue  # a line cut by a crash
            row = rows.get(number)
            if row is None or row.to != rec.get("to"):
                raise CampaignError(
                    f"{path}: row {number} is not in this list (another list's results?)"
                )
            done[number] = rec.get("outcome") or ""
    return done


def _load_journal(path: Path) -> set[int]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text(encoding="utf-8", errors="replace").split():
        with contextlib.suppress(ValueError):
            out.add(int(line))
    return out


class _Appender:
    """An append-only file synced after each write (a crash loses no finished line)."""

    def __init__(self, path: Path, header: Iterable[str] | None = None) -> None:
        fresh = not path.exists() or path.stat().st_size == 0
        self.fh: IO[str] = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.csv = csv.writer(self.fh)
        if header is not None and fresh:
            self.csv.writerow(header)
            self.sync()

    def row(self, values: Iterable[Any]) -> None:
        self.csv.writerow(["" if v is None else v for v in values])
        self.sync()

    def line(self, text: str) -> None:
        self.fh.write(text + "\n")
        self.sync()

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def classify(call: Any) -> str:
    """A finished call's outcome: machine / answered / busy / no-answer / cancelled / failed."""
    from softswitch.model import EndReason

    end = call.end
    machine = getattr(call.machine, "machine", None)
    if machine:
        return "machine"
    if call.answered_at is not None:
        return "answered"
    if end is None:
        return "failed"
    if end.cause in _CAUSE_BUSY:
        return "busy"
    if end.cause in _NO_ANSWER or end.reason is EndReason.RING_TIMEOUT:
        return "no-answer"
    if end.reason in (EndReason.API, EndReason.SHUTDOWN):
        return "cancelled"
    return "failed"


def _result(row: Row, outcome: str, call: Any = None, error: str | None = None) -> list[Any]:
    from softswitch.calltable import record_time

    def when(ts: float | None) -> str | None:
        return record_time(ts) if ts else None

    end = getattr(call, "end", None)
    machine = getattr(call, "machine", None)
    values: dict[str, Any] = {
        "row": row.number,
        "to": row.to,
        "from": row.from_,
        "outcome": outcome,
        "error": error,
    }
    if call is not None:
        values.update(
            call_uuid=call.call_uuid,
            hangup_cause=end.cause if end else None,
            sip_status=end.sip_status if end else None,
            hangup_source=end.source.value if end else None,
            duration=call.duration,
            bill_duration=call.bill_duration,
            machine=("true" if machine.machine else "false") if machine is not None else None,
            initiation_time=when(call.dialed_at),
            answer_time=when(call.answered_at),
            end_time=when(call.ended_at),
            error=error or call.error,
        )
    return [values.get(column) for column in RESULT_COLUMNS]


# ------------------------------------------------------------------------------- running


def run_campaign(args: argparse.Namespace, usage: Callable[[str], NoReturn]) -> int:
    if (args.username is None) != (args.password is None):
        usage("--username and --password go together")
    if args.machine_detection and not 2000 <= args.machine_detection_time <= 10000:
        usage("--machine-detection-time must be 2000..10000 ms")
    if not urlsplit(args.answer_url).scheme.startswith("http"):
        usage(f"--answer-url must be an http(s) URL, got {args.answer_url!r}")
    results = Path(args.results or f"{os.path.splitext(args.file)[0]}.results.csv")
    try:
        rows = read_rows(args.file)
        done = _load_results(results, {r.number: r for r in rows})
    except CampaignError as exc:
        usage(str(exc))
    try:
        config = _config(args, rows)
    except Exception as exc:  # ConfigError, OSError: the configuration file
        usage(str(exc))
    try:
        return asyncio.run(Campaign(args, config, rows, results, done).run())
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            usage(f"--sip {config.sip_host}:{config.sip_port}: {os.strerror(exc.errno).lower()}")
        raise


def _config(args: argparse.Namespace, rows: list[Row]) -> Any:
    from softswitch.cli import _target_host, local_address_for
    from softswitch.config import Gateway, load_config

    overrides: dict[str, object] = {"db_path": ":memory:"}
    if args.rtp_ports is not None:
        overrides["rtp_ports"] = f"{args.rtp_ports[0]}-{args.rtp_ports[1]}"
    config = load_config(args.config, overrides=overrides)
    if args.gateway is not None:
        host, port = args.gateway
        config.gateways.insert(
            0,
            Gateway(
                name="campaign",
                host=host,
                port=port,
                transport=args.transport,
                username=args.username,
                password=args.password,
            ),
        )
    if args.sip is not None:
        config.sip_host, config.sip_port = args.sip
    else:
        config.sip_port = 0  # any free port: a campaign takes no calls
        # Without --config, the address this machine would send from to the first hop (the
        # gateway, else the first row's SIP URI), as ``softswitch call`` does.
        first_hop = _target_host(rows[0].to, args.gateway) if rows else None
        if args.config is None and first_hop is not None:
            config.sip_host = local_address_for(*first_hop)
    config.inbound = []
    return config


class Campaign:
    def __init__(
        self,
        args: argparse.Namespace,
        config: Any,
        rows: list[Row],
        results: Path,
        done: dict[int, str],
    ) -> None:
        self.args = args
        self.config = config
        self.rows = rows
        self.results_path = results
        self.journal_path = results.with_name(results.name + ".journal")
        self.done = done
        self.counts: Counter[str] = Counter(done.values())
        self.called = 0
        self.stopping = False
        self.live: set[Any] = set()
        self.bar: Any = None

    async def run(self) -> int:
        from softswitch.admission import AccountLimits
        from softswitch.api.plivo import PlivoDialect
        from softswitch.call import CallManager
        from softswitch.server import build_user_agent
        from softswitch.signing import register_signer
        from softswitch.store import CallStore
        from softswitch.webhooks import WebhookOutbox

        started = time.monotonic()
        cfg = self.config
        dialect = PlivoDialect()
        for name, signer in dialect.signers.items():
            register_signer(name, signer)
        account = AccountLimits("MACAMPAIGN0000000000", "campaign", 0.0, self.args.concurrency)
        store = CallStore(":memory:")
        outbox = WebhookOutbox(
            store,
            timeout_s=cfg.webhook_timeout_s,
            retries=cfg.webhook_retries,
            backoff_s=cfg.webhook_backoff_s,
            user_agent=cfg.user_agent,
            auth_token_for=lambda _uuid: account.auth_token,
        )
        results = _Appender(self.results_path, RESULT_COLUMNS)
        journal = _Appender(self.journal_path)
        ua = build_user_agent(cfg)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        installed: list[signal.Signals] = []
        try:
            # Rows the previous run started and never recorded died with it: not called again.
            for number in sorted(_load_journal(self.journal_path) - set(self.done)):
                row = next((r for r in self.rows if r.number == number), None)
                if row is not None:
                    results.row(
                        _result(
                            row, "interrupted", error="the previous run stopped during this call"
                        )
                    )
                    self.done[number] = "interrupted"
                    self.counts["interrupted"] += 1
            await outbox.start()
            await ua.start()
            manager = CallManager(
                store,
                outbox,
                ua,
                dialect=[dialect],
                accounts=[account],
                max_concurrent=self.args.concurrency,
                max_queue=self.args.concurrency + 1,
                answer_url_attempts=cfg.answer_url_attempts,
                answer_url_deadline_s=cfg.answer_url_deadline_s,
                data_dir=cfg.data_dir,
            )
            manager.app_runner = manager.run_xml

            def on_signal(sig: signal.Signals) -> None:
                if self.stopping:  # a second one: stop waiting for the hangups
                    if main is not None:
                        main.cancel()
                    return
                self.stopping = True
                print(
                    f"softswitch campaign: {sig.name}: hanging up {len(self.live)} live call(s); "
                    "run the same command again to resume",
                    file=sys.stderr,
                    flush=True,
                )
                from softswitch.model import EndReason, HangupSource

                for call in list(self.live):
                    manager.spawn(
                        manager.hangup(
                            call, causes.NORMAL_CLEARING, HangupSource.API, EndReason.API
                        ),
                        f"stop-{call.call_uuid}",
                    )

            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal, sig)
                    installed.append(sig)
            self.bar = self._progress()
            await self._dial_all(manager, account, results, journal)
        except asyncio.CancelledError:
            self.stopping = True
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self.bar is not None:
                self.bar.close()
            with contextlib.suppress(Exception):
                await outbox.close(2.0)
            with contextlib.suppress(Exception):
                await ua.close()
            results.close()
            journal.close()
            store.close()
        complete = len(self.done) >= len(self.rows)
        summary = {
            "rows": len(self.rows),
            "done": len(self.done),
            "called": self.called,
            **{name.replace("-", "_"): self.counts.get(name, 0) for name in OUTCOMES},
            "complete": complete,
            "results": str(self.results_path),
            "elapsed_s": round(time.monotonic() - started, 3),
        }
        print(json.dumps(summary), flush=True)
        return EXIT_DONE if complete else EXIT_INTERRUPTED

    def _progress(self) -> Any:
        from tqdm import tqdm  # type: ignore[import-untyped]

        disable = True if self.args.no_progress else None  # None: only on a terminal
        bar = tqdm(
            total=len(self.rows),
            initial=len(self.done),
            unit="call",
            file=sys.stderr,
            disable=disable,
            dynamic_ncols=True,
        )
        self._show(bar)
        return bar

    def _show(self, bar: Any) -> None:
        bar.set_postfix(
            {
                name: self.counts[name]
                for name in ("answered", "busy", "no-answer", "machine", "failed")
                if name in self.counts or name != "failed"
            },
            refresh=True,
        )

    async def _dial_all(
        self, manager: Any, account: Any, results: _Appender, journal: _Appender
    ) -> None:
        from softswitch.api.plivo.request import ApiError, parse_call_request

        slots = asyncio.Semaphore(self.args.concurrency)
        interval = 1.0 / self.args.cps
        next_at = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        for row in self.rows:
            if row.number in self.done:
                continue
            await slots.acquire()
            if self.stopping:
                slots.release()
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the calls-per-second pace, not a wait for an event
            if self.stopping:
                slots.release()
                break
            next_at = max(next_at + interval, time.monotonic())
            try:
                spec = parse_call_request(self._request(row)).to_spec()
            except (ApiError, ValueError) as exc:  # the row's to/from, or a value the API refuses
                self._record(results, row, "invalid", None, getattr(exc, "error", None) or str(exc))
                slots.release()
                continue
            journal.line(
                str(row.number)
            )  # before the INVITE: a crash now is "interrupted" next time
            self.called += 1
            try:
                admitted = await manager.admit(account, spec)
            except Exception as exc:  # QueueFull, ShuttingDown
                self._record(results, row, "failed", None, f"not admitted: {exc}")
                slots.release()
                continue
            call = manager.calls.get(admitted.call_uuids[0])
            task = asyncio.get_running_loop().create_task(
                self._follow(manager, call, row, results, slots)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _request(self, row: Row) -> dict[str, Any]:
        a = self.args
        data: dict[str, Any] = {
            "from": row.from_,
            "to": row.to,
            "answer_url": with_variables(a.answer_url, row.variables),
            "answer_method": a.answer_method,
            "ring_timeout": a.ring_timeout,
        }
        optional = {
            "hangup_url": a.hangup_url,
            "caller_name": a.caller_name,
            "time_limit": a.time_limit,
            "machine_detection": a.machine_detection,
            "machine_detection_url": a.machine_detection_url,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        if a.machine_detection:
            data["machine_detection_time"] = a.machine_detection_time
        return data

    async def _follow(
        self, manager: Any, call: Any, row: Row, results: _Appender, slots: asyncio.Semaphore
    ) -> None:
        try:
            if call is None:  # finished before admit returned (refused at once)
                self._record(results, row, "failed", None, "call ended before it was followed")
                return
            self.live.add(call)
            await call.finished.wait()
            self._record(results, row, classify(call), call)
        finally:
            self.live.discard(call)
            slots.release()

    def _record(
        self, results: _Appender, row: Row, outcome: str, call: Any, error: str | None = None
    ) -> None:
        results.row(_result(row, outcome, call, error))
        self.done[row.number] = outcome
        self.counts[outcome] += 1
        log.info("row %d %s: %s", row.number, row.to, outcome)
        if self.bar is not None:
            self.bar.update(1)
            self._show(self.bar)
