"""Webhooks: signed HTTP callbacks through a durable, per-call ordered outbox.

Two ways out:

* :meth:`WebhookOutbox.post` for notifications (ring/hangup/machine-detection/status
  callbacks).  The delivery is written to SQLite *before* anything is sent, then sent in the
  background: in order per call (a later event for a call waits until the earlier ones are
  delivered or have failed for good), concurrently across calls, retried with exponential backoff
  and jitter, and resumed by the next process after a crash or restart.  ``post()`` never waits
  on the network, so a dead receiver cannot hold up a call.
* :meth:`WebhookOutbox.fetch` for requests whose answer drives the call (``answer_url``, XML
  ``action`` URLs): a bounded number of attempts within a deadline, returning the body.  Plivo:
  "We retry answer_url three times ... or after a timeout of 60 seconds, whichever is earlier,
  fallback_url is invoked."

Retry policy (chosen, documented here and in the example config):

* success is any 2xx.  Redirects are not followed for ``post`` (a 3xx is a permanent failure:
  the signature covers the URL, so re-sending elsewhere would not validate) and are followed
  (at most 5) for ``fetch``, where answer XML is often served from object storage behind one.
* retried: connection failures and timeouts, 5xx, 429 (``Retry-After`` honoured up to the
  backoff cap).  Any other 4xx is permanent after one attempt: the receiver has rejected the
  request and sending it again would not change its mind.
* a Plivo URL fragment overrides this per URL, as Plivo's "callback configurations" document:
  ``#ct=2000&rt=40000&tt=55000&rc=1&rp=ct,rt`` = connect timeout ms (100-10000), read timeout ms
  (100-40000), total timeout ms over all attempts (100-55000), retry count (0-5) and retry
  policy (``4xx``, ``5xx``, ``ct``, ``rt``, ``all``).  The fragment is never sent.

Signatures (``signature=``):

* ``'v3'`` (Plivo v1 API): ``X-Plivo-Signature-V3`` / ``-Ma-V3`` / ``-V3-Nonce``, plus the older
  ``X-Plivo-Signature-V2`` / ``-Ma-V2`` / ``-V2-Nonce``, computed exactly as the official plivo
  SDK's ``validate_v3_signature`` and ``validate_signature`` check them (there are no
  subaccounts here, so the ``Ma`` headers carry the same value).
* ``'v1'`` (legacy Plivo framework): ``X-Plivo-Signature``, HMAC-SHA1 over the URL followed by the
  sorted POST parameters as name+value, base64 — Twilio's algorithm.
* ``'callapi'``: the same algorithm in ``X-Twilio-Signature``, where the Twilio-style receivers
  of the CallAPI dialect look for it.
* ``'none'``: unsigned.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlsplit, urlunparse, urlunsplit

import aiohttp

from .store import CallStore

__all__ = [
    "CallbackOptions",
    "Delivery",
    "FetchResult",
    "PreparedRequest",
    "WebhookOutbox",
    "make_nonce",
    "parse_callback_url",
    "prepare_request",
    "sign_callapi",
    "sign_v1",
    "sign_v2",
    "sign_v3",
]

log = logging.getLogger(__name__)

ParamValue = str | Sequence[str]
Params = Mapping[str, ParamValue]

SIGNATURE_MODES = ("v3", "v1", "callapi", "none")
MAX_FETCH_BODY = 1 << 20  # answer XML larger than 1 MiB is refused (bounded buffers)
_DRAIN_BODY = 64 << 10  # at most this much of a notification response is read, then dropped


# --------------------------------------------------------------------------- signatures


def _hmac_b64(key: str, message: str, digest: Any) -> str:
    mac = hmac.new(key.encode("utf-8"), message.encode("utf-8"), digest).digest()
    return base64.b64encode(mac).decode("ascii")


def _values(value: ParamValue) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _base_url(url: str) -> tuple[str, str]:
    """``scheme://netloc/path`` and the raw query, split the way the plivo SDK splits them."""
    p = urlparse(url)
    return urlunparse((p.scheme, p.netloc, p.path, "", "", "")), p.query


def _sorted_query(params: Mapping[str, list[str]]) -> str:
    # "k=v&k=v" over sorted keys, multiple values sorted: the SDK's get_sorted_query_string.
    return "&".join("&".join(f"{k}={v}" for v in sorted(params[k])) for k in sorted(params))


def _sorted_params(params: Params) -> str:
    # "k1v1k2v2" over sorted keys: the SDK's get_sorted_params_string.
    return "".join("".join(f"{k}{v}" for v in sorted(_values(params[k]))) for k in sorted(params))


def sign_v3(url: str, params: Params, nonce: str, auth_token: str, method: str = "POST") -> str:
    """``X-Plivo-Signature-V3``: base64 HMAC-SHA256, keyed by the auth token, over

    * GET: ``scheme://host/path?k=v&k=v`` with the URL's query and ``params`` merged, keys
      sorted (a query value wins over a param of the same name, as in the SDK), then ``.nonce``;
    * POST: ``scheme://host/path?<sorted query>.<k1v1k2v2 sorted params>.nonce``, where the
      ``?`` appears when there is a query or params and the ``.`` between them only when both.

    This mirrors ``plivo.utils.signature_v3.validate_v3_signature`` byte for byte.  For a GET
    callback pass the URL as requested (query included) and empty ``params``.
    """
    base, query = _base_url(url)
    query_map: dict[str, list[str]] = {
        k: list(v) for k, v in parse_qs(query, keep_blank_values=True).items()
    }
    if method.upper() == "GET":
        merged: dict[str, list[str]] = {k: _values(v) for k, v in params.items()}
        merged.update(query_map)
        q = _sorted_query(merged)
        signed = base + ("?" + q if q else "")
    else:
        q = _sorted_query(query_map)
        signed = base
        if q or params:
            signed += "?" + q
        if q and params:
            signed += "."
        signed += _sorted_params(params)
    return _hmac_b64(auth_token, f"{signed}.{nonce}", hashlib.sha256)


def sign_v2(url: str, nonce: str, auth_token: str) -> str:
    """``X-Plivo-Signature-V2``: base64 HMAC-SHA256 over the URL without query, then the nonce.

    What ``plivo.utils.validate_signature`` checks.
    """
    base, _ = _base_url(url)
    return _hmac_b64(auth_token, base + nonce, hashlib.sha256)


def sign_v1(url: str, params: Params, auth_token: str) -> str:
    """``X-Plivo-Signature`` of the legacy framework: Twilio's request-signing algorithm.

    base64 HMAC-SHA1 over the full URL (query included, as requested) followed by each POST
    parameter as name+value, names sorted; repeated names contribute each distinct value in
    sorted order (what Twilio's validators do).  For GET, pass the full URL and no params.
    """
    s = url
    for name in sorted(params):
        for value in sorted(set(_values(params[name]))):
            s += name + value
    return _hmac_b64(auth_token, s, hashlib.sha1)


sign_callapi = sign_v1
"""The CallAPI dialect signs like Twilio (``X-Twilio-Signature``): the v1 algorithm."""


def make_nonce() -> str:
    """A 20-digit random nonce, the shape of Plivo's ``X-Plivo-Signature-V3-Nonce``."""
    return str(secrets.randbelow(9 * 10**19) + 10**19)


# --------------------------------------------------------------------------- request shaping


@dataclass(frozen=True)
class CallbackOptions:
    """Per-URL overrides from a Plivo URL fragment (``#ct=..&rt=..&tt=..&rc=..&rp=..``)."""

    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    total_timeout_s: float | None = None
    retries: int | None = None
    retry_on: frozenset[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form for the outbox table."""
        d: dict[str, Any] = {
            "ct": self.connect_timeout_s,
            "rt": self.read_timeout_s,
            "tt": self.total_timeout_s,
            "rc": self.retries,
            "rp": None if self.retry_on is None else sorted(self.retry_on),
        }
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CallbackOptions:
        """Inverse of :meth:`to_json`."""
        rp = d.get("rp")
        return cls(
            connect_timeout_s=d.get("ct"),
            read_timeout_s=d.get("rt"),
            total_timeout_s=d.get("tt"),
            retries=d.get("rc"),
            retry_on=None if rp is None else frozenset(rp),
        )


DEFAULT_RETRY_ON = frozenset({"ct", "rt", "5xx", "429"})
_FRAGMENT_LIMITS = {"ct": (100, 10000), "rt": (100, 40000), "tt": (100, 55000)}


def parse_callback_url(url: str) -> tuple[str, CallbackOptions]:
    """Strip the fragment off ``url`` and read Plivo's callback configuration from it.

    Out-of-range values are clamped into the documented ranges; unknown keys and fragments
    that are not ``key=value`` lists are ignored (a fragment never reaches the server anyway).
    """
    parts = urlsplit(url)
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    if not parts.fragment:
        return clean, CallbackOptions()
    values: dict[str, Any] = {}
    for item in parts.fragment.split("&"):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep:
            continue
        if key in _FRAGMENT_LIMITS:
            try:
                ms = float(raw)
            except ValueError:
                continue
            low, high = _FRAGMENT_LIMITS[key]
            values[key] = min(max(ms, low), high) / 1000.0
        elif key == "rc":
            try:
                values["rc"] = min(max(int(raw), 0), 5)
            except ValueError:
                continue
        elif key == "rp":
            classes: set[str] = set()
            for c in raw.split(","):
                c = c.strip().lower()
                if c == "all":
                    classes |= {"4xx", "5xx", "ct", "rt"}
                elif c in ("4xx", "5xx", "ct", "rt"):
                    classes.add(c)
            values["rp"] = frozenset(classes)
    return clean, CallbackOptions(
        connect_timeout_s=values.get("ct"),
        read_timeout_s=values.get("rt"),
        total_timeout_s=values.get("tt"),
        retries=values.get("rc"),
        retry_on=values.get("rp"),
    )


def _str_params(params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Form values are strings: None -> '', bools -> 'true'/'false', lists kept as lists."""
    out: dict[str, ParamValue] = {}
    for k, v in params.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, str):
            out[k] = v
        elif isinstance(v, list | tuple):
            out[k] = [str(x) for x in v]
        else:
            out[k] = str(v)
    return out


@dataclass(frozen=True)
class PreparedRequest:
    """An HTTP request ready to send: the final URL, form body (POST) and headers."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


def prepare_request(
    url: str,
    method: str,
    params: Mapping[str, Any],
    *,
    auth_token: str | None,
    signature: str = "v3",
    nonce: str | None = None,
    user_agent: str = "softswitch/0.1",
) -> PreparedRequest:
    """Shape and sign one callback request.  ``url`` must already be fragment-free.

    GET appends the parameters to the URL's query string; POST sends them as
    ``application/x-www-form-urlencoded``.  Pure: no I/O.
    """
    method = method.upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"callback method must be GET or POST, got {method!r}")
    if signature not in SIGNATURE_MODES:
        raise ValueError(f"unknown signature mode {signature!r}")
    form = _str_params(params)
    encoded = urlencode(list(_pairs(form)))
    headers = {"User-Agent": user_agent}
    if method == "GET":
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, encoded) if q)
        final_url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        body = None
        signed_params: Mapping[str, ParamValue] = {}
    else:
        final_url = url
        body = encoded.encode("ascii")
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed_params = form
    if auth_token and signature != "none":
        if signature == "v3":
            nonce = nonce or make_nonce()
            v3 = sign_v3(final_url, signed_params, nonce, auth_token, method)
            v2 = sign_v2(final_url, nonce, auth_token)
            headers.update(
                {
                    "X-Plivo-Signature-V3": v3,
                    "X-Plivo-Signature-Ma-V3": v3,
                    "X-Plivo-Signature-V3-Nonce": nonce,
                    "X-Plivo-Signature-V2": v2,
                    "X-Plivo-Signature-Ma-V2": v2,
                    "X-Plivo-Signature-V2-Nonce": nonce,
                }
            )
        elif signature == "v1":
            headers["X-Plivo-Signature"] = sign_v1(final_url, signed_params, auth_token)
        else:
            headers["X-Twilio-Signature"] = sign_callapi(final_url, signed_params, auth_token)
    return PreparedRequest(method=method, url=final_url, body=body, headers=headers)


def _pairs(form: Mapping[str, ParamValue]) -> Any:
    for k, v in form.items():
        for item in _values(v):
            yield k, item


# --------------------------------------------------------------------------- results


@dataclass
class Delivery:
    """One queued notification and where it stands."""

    id: int
    call_uuid: str
    event: str
    url: str
    method: str
    params: dict[str, Any]
    attempts: int
    status: str  # 'pending' | 'delivered' | 'failed'
    last_status: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None  # when it became delivered or failed
    kind: str = "post"  # 'post' (outbox) or 'fetch' (answer/action URL fetch)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Delivery:
        """Build from a ``webhook_deliveries`` row."""
        return cls(
            id=row["id"],
            call_uuid=row["call_uuid"],
            event=row["event"],
            url=row["url"],
            method=row["method"],
            params=row["params"],
            attempts=row["attempts"],
            status=row["status"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
            kind=row["kind"],
        )


@dataclass
class FetchResult:
    """Outcome of :meth:`WebhookOutbox.fetch`: the body of the first 2xx, or why there was none."""

    ok: bool
    status: int | None
    body: str
    error: str | None
    attempts: int
    url: str
    content_type: str | None = None
    delivery_id: int | None = None


@dataclass
class _Attempt:
    status: int | None = None
    error: str | None = None
    failure: str | None = None  # retry class: 'ct' | 'rt' | '4xx' | '5xx' | '429' | 'redirect'
    body: str = ""
    content_type: str | None = None
    retry_after: float | None = None
    duration_ms: float = 0.0


@dataclass
class _Pending:
    id: int
    call_uuid: str
    request: PreparedRequest
    options: CallbackOptions
    attempts: int = 0
    next_attempt_at: float | None = None  # wall clock


# --------------------------------------------------------------------------- the outbox


class WebhookOutbox:
    """Durable, ordered-per-call, retried webhook delivery (see the module docstring)."""

    def __init__(
        self,
        store: CallStore,
        *,
        timeout_s: float = 10,
        retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "softswitch/0.1",
        max_concurrency: int = 100,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.user_agent = user_agent
        self._session = session
        self._own_session = session is None
        self._sem = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._queues: dict[str, deque[_Pending]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._closed = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the HTTP session and resume every delivery a previous process left pending.

        Fetches interrupted by a crash are marked failed: the call that waited on them is gone.
        """
        if self._started:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrency),
            )
        self._started = True
        self._closed = False
        for row in self.store.pending_deliveries(kind="fetch"):
            self.store.finish_delivery(row["id"], "failed")
        resumed = 0
        for row in self.store.pending_deliveries(kind="post"):
            req = PreparedRequest(
                method=row["method"],
                url=_final_url(row["url"], row["method"], row["params"]),
                body=None
                if row["method"] == "GET"
                else urlencode(list(_pairs(row["params"]))).encode("ascii"),
                headers=row["headers"],
            )
            pending = _Pending(
                id=row["id"],
                call_uuid=row["call_uuid"],
                request=req,
                options=CallbackOptions.from_json(row["options"]),
                attempts=row["attempts"],
                next_attempt_at=row["next_attempt_at"],
            )
            self._enqueue(pending)
            resumed += 1
        if resumed:
            log.info("webhook outbox: resumed %d pending deliveries", resumed)

    async def close(self, drain_timeout_s: float = 10) -> None:
        """Try to flush for ``drain_timeout_s``, then stop; what is left stays pending on disk."""
        if self._started and drain_timeout_s > 0:
            await self.wait_idle(None, drain_timeout_s)
        self._closed = True
        self._started = False
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers.clear()
        self._queues.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------- post

    def post(
        self,
        call_uuid: str,
        event: str,
        url: str,
        method: str,
        params: Mapping[str, Any],
        *,
        auth_token: str | None,
        signature: str = "v3",
    ) -> int:
        """Queue a notification and return its delivery id at once.

        The row is persisted before this returns; sending happens in the background (or at the
        next :meth:`start` when the outbox is not running).
        """
        clean_url, options = parse_callback_url(url)
        req = prepare_request(
            clean_url,
            method,
            params,
            auth_token=auth_token,
            signature=signature,
            user_agent=self.user_agent,
        )
        form = _str_params(params)
        delivery_id = self.store.add_delivery(
            call_uuid=call_uuid,
            event=event,
            url=clean_url,
            method=req.method,
            params=form,
            headers=req.headers,
            options=options.to_json(),
        )
        if self._started and not self._closed:
            self._enqueue(
                _Pending(id=delivery_id, call_uuid=call_uuid, request=req, options=options)
            )
        return delivery_id

    def _enqueue(self, pending: _Pending) -> None:
        queue = self._queues.setdefault(pending.call_uuid, deque())
        queue.append(pending)
        if pending.call_uuid not in self._workers:
            self._workers[pending.call_uuid] = asyncio.get_running_loop().create_task(
                self._run_call(pending.call_uuid), name=f"webhooks:{pending.call_uuid}"
            )

    async def _run_call(self, call_uuid: str) -> None:
        # One worker per call with something queued: this is what orders a call's events.
        queue = self._queues[call_uuid]
        try:
            while queue:
                try:
                    await self._deliver(queue[0])
                except Exception:
                    # A bug or a broken store must not wedge the call's queue forever.
                    log.exception("webhook %d: delivery crashed", queue[0].id)
                    try:
                        self.store.finish_delivery(queue[0].id, "failed")
                    except Exception:
                        log.exception("webhook %d: cannot record the failure", queue[0].id)
                queue.popleft()
        finally:
            # No await between the last `while queue` check and here: a concurrent post()
            # either saw this worker (and its item was consumed) or will start a new one.
            if self._queues.get(call_uuid) is queue and not queue:
                del self._queues[call_uuid]
            if self._workers.get(call_uuid) is asyncio.current_task():
                del self._workers[call_uuid]

    def _max_attempts(self, options: CallbackOptions) -> int:
        return 1 + (self.retries if options.retries is None else options.retries)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_s * 2.0 ** min(attempt - 1, 30), self.backoff_max_s)
        delay *= random.uniform(0.5, 1.0)  # jitter: receivers recovering are not stampeded
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    async def _deliver(self, p: _Pending) -> None:
        max_attempts = self._max_attempts(p.options)
        retry_on = DEFAULT_RETRY_ON if p.options.retry_on is None else p.options.retry_on
        total = p.options.total_timeout_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if p.next_attempt_at is not None:
                delay = p.next_attempt_at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            p.attempts += 1
            timeout = self.timeout_s
            if total is not None:
                timeout = min(timeout, max(0.1, total - (loop.time() - started)))
            async with self._sem:
                result = await self._request(p.request, p.options, timeout, follow=False)
            self.store.record_attempt(
                p.id,
                p.attempts,
                status=result.status,
                error=result.error,
                duration_ms=result.duration_ms,
            )
            if result.failure is None:
                self.store.finish_delivery(p.id, "delivered")
                return
            retryable = _retryable(result.failure, retry_on)
            elapsed = loop.time() - started
            out_of_time = total is not None and elapsed >= total
            if not retryable or p.attempts >= max_attempts or out_of_time:
                self.store.finish_delivery(p.id, "failed")
                log.warning(
                    "webhook %d (%s) to %s failed after %d attempt(s): %s",
                    p.id,
                    p.call_uuid,
                    p.request.url,
                    p.attempts,
                    result.error or f"HTTP {result.status}",
                )
                return
            delay = self._backoff(p.attempts, result.retry_after)
            if total is not None:
                delay = min(delay, max(0.0, total - elapsed))
            p.next_attempt_at = time.time() + delay
            self.store.reschedule_delivery(p.id, p.next_attempt_at)

    # ----------------------------------------------------------------- HTTP

    async def _request(
        self,
        req: PreparedRequest,
        options: CallbackOptions,
        timeout_s: float,
        *,
        follow: bool,
        limit: int = _DRAIN_BODY,
        keep_body: bool = False,
    ) -> _Attempt:
        if self._session is None:
            raise RuntimeError("WebhookOutbox.start() has not been called")
        timeout = aiohttp.ClientTimeout(
            total=timeout_s,
            sock_connect=options.connect_timeout_s,
            sock_read=options.read_timeout_s,
        )
        t0 = time.perf_counter()
        result = _Attempt()
        try:
            async with self._session.request(
                req.method,
                req.url,
                data=req.body,
                headers=req.headers,
                timeout=timeout,
                allow_redirects=follow,
                max_redirects=5,
            ) as resp:
                result.status = resp.status
                result.content_type = resp.headers.get("Content-Type")
                body, too_big = await _read_limited(resp, limit)
                if keep_body:
                    result.body = body.decode(resp.charset or "utf-8", errors="replace")
                if 200 <= resp.status < 300:
                    if too_big and keep_body:
                        result.error = f"response body larger than {limit} bytes"
                        result.failure = "body"  # the answer is unusable: never retried
                    return result
                result.failure = _status_class(resp.status)
                result.error = f"HTTP {resp.status}"
                if result.failure == "redirect":
                    result.error += f" redirect to {resp.headers.get('Location', '?')} not followed"
                result.retry_after = _retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError as exc:
            result.failure, result.error = "ct", f"connect timeout: {exc}"
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            result.failure, result.error = "rt", f"timeout: {exc or 'no response in time'}"
        except aiohttp.TooManyRedirects as exc:
            result.failure, result.error = "redirect", f"too many redirects: {exc}"
        except aiohttp.ClientError as exc:
            result.failure, result.error = "ct", f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            result.failure, result.error = "ct", f"{type(exc).__name__}: {exc}"
        finally:
            result.duration_ms = (time.perf_counter() - t0) * 1000.0
        return result

    # ----------------------------------------------------------------- fetch

    async def fetch(
        self,
        url: str,
        method: str,
        params: Mapping[str, Any],
        *,
        auth_token: str | None,
        signature: str = "v3",
        attempts: int = 3,
        deadline_s: float = 60,
        timeout_s: float | None = None,
        call_uuid: str | None = None,
        event: str = "fetch",
        max_body: int = MAX_FETCH_BODY,
    ) -> FetchResult:
        """Request ``url`` and return the body of the first 2xx.

        Up to ``attempts`` tries (a fragment ``rc`` makes it ``rc + 1``) within ``deadline_s``
        (a fragment ``tt`` can shorten it); retries follow the outbox policy with the outbox
        backoff.  Every attempt is recorded as a ``kind='fetch'`` delivery of ``call_uuid``.
        Never raises for network trouble: the result says what happened.
        """
        if self._session is None:
            raise RuntimeError("WebhookOutbox.start() has not been called")
        clean_url, options = parse_callback_url(url)
        if options.retries is not None:
            attempts = options.retries + 1
        if options.total_timeout_s is not None:
            deadline_s = min(deadline_s, options.total_timeout_s)
        retry_on = DEFAULT_RETRY_ON if options.retry_on is None else options.retry_on
        req = prepare_request(
            clean_url,
            method,
            params,
            auth_token=auth_token,
            signature=signature,
            user_agent=self.user_agent,
        )
        delivery_id = self.store.add_delivery(
            call_uuid=call_uuid or "",
            event=event,
            url=clean_url,
            method=req.method,
            params=_str_params(params),
            headers=req.headers,
            options=options.to_json(),
            kind="fetch",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        per_try = self.timeout_s if timeout_s is None else timeout_s
        result = _Attempt(error="no attempt made")
        n = 0
        while n < max(1, attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                result.error = f"deadline of {deadline_s:g}s exceeded ({result.error})"
                break
            n += 1
            async with self._sem:
                result = await self._request(
                    req,
                    options,
                    min(per_try, remaining),
                    follow=True,
                    limit=max_body,
                    keep_body=True,
                )
            self.store.record_attempt(
                delivery_id,
                n,
                status=result.status,
                error=result.error,
                duration_ms=result.duration_ms,
            )
            if result.failure is None:
                self.store.finish_delivery(delivery_id, "delivered")
                return FetchResult(
                    ok=True,
                    status=result.status,
                    body=result.body,
                    error=None,
                    attempts=n,
                    url=clean_url,
                    content_type=result.content_type,
                    delivery_id=delivery_id,
                )
            if not _retryable(result.failure, retry_on) or n >= attempts:
                break
            delay = min(self._backoff(n, result.retry_after), max(0.0, deadline - loop.time()))
            await asyncio.sleep(delay)
        self.store.finish_delivery(delivery_id, "failed")
        return FetchResult(
            ok=False,
            status=result.status,
            body=result.body,
            error=result.error or "failed",
            attempts=n,
            url=clean_url,
            content_type=result.content_type,
            delivery_id=delivery_id,
        )

    # ----------------------------------------------------------------- inspection

    def deliveries(self, call_uuid: str) -> list[Delivery]:
        """Every delivery of a call (posts and fetches), oldest first."""
        return [Delivery.from_row(r) for r in self.store.list_deliveries(call_uuid)]

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        """The recorded attempts of one delivery: attempt, at, status, error, duration_ms."""
        return self.store.list_attempts(delivery_id)

    def pending_count(self, call_uuid: str | None = None) -> int:
        """Deliveries queued in this process and not finished (for one call or all)."""
        if call_uuid is not None:
            return len(self._queues.get(call_uuid, ()))
        return sum(len(q) for q in self._queues.values())

    async def wait_idle(self, call_uuid: str | None = None, timeout: float = 10) -> bool:
        """Wait until nothing is queued (for one call, or at all); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if call_uuid is None:
                tasks = list(self._workers.values())
            else:
                task = self._workers.get(call_uuid)
                tasks = [task] if task is not None else []
            if not tasks:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(tasks, timeout=remaining)


# --------------------------------------------------------------------------- helpers


def _final_url(url: str, method: str, params: Mapping[str, Any]) -> str:
    if method.upper() != "GET":
        return url
    parts = urlsplit(url)
    encoded = urlencode(list(_pairs(_str_params(params))))
    query = "&".join(q for q in (parts.query, encoded) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _status_class(status: int) -> str:
    if status == 429:
        return "429"
    if 300 <= status < 400:
        return "redirect"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


def _retryable(failure: str, retry_on: frozenset[str]) -> bool:
    if failure == "redirect":
        return False
    if failure == "429":
        return "429" in retry_on or "4xx" in retry_on
    return failure in retry_on


def _retry_after(value: str | None) -> float | None:
    # RFC 9110 §10.2.3: delay-seconds or an HTTP-date; only the seconds form is honoured.
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of the body; True in the second slot if there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16384):
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: limit - (size - len(chunk))])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False
