"""The webhook outbox: durable, ordered per call, retried, resumed after a restart.

Two ways out:

* :meth:`WebhookOutbox.post` for notifications (ring/hangup/machine-detection/status
  callbacks).  The delivery is written to SQLite *before* anything is sent, then sent in the
  background: in order per call (a later event for a call waits until the earlier ones are
  delivered or have failed for good), concurrently across calls, retried with exponential backoff
  and jitter, and resumed by the next process after a crash or restart.  ``post()`` never waits
  on the network, so a dead receiver cannot hold up a call.
* :meth:`WebhookOutbox.fetch` for requests whose answer drives the call (the answer URL, a
  document's action URLs): a bounded number of attempts within a deadline (by default three
  within 60 s, after which the caller moves on to its fallback URL), returning the body.

What one attempt is (request shape, per-URL fragment options, retry classes) lives in
:mod:`softswitch.webhook_http`; how a request is signed, in :mod:`softswitch.signing`: the
caller names a registered scheme (``signature=``, a dialect's
:attr:`~softswitch.dialect.Dialect.signature`), and each row stores that name, so a delivery
resumed by the next process is re-signed by the same scheme (with the call's current auth
token when ``auth_token_for`` finds it, else with the headers signed when it was posted).
The outbox itself knows no dialect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .netpolicy import FetchPolicy, default_policy
from .signing import UnknownSignature
from .store import Store
from .webhook_http import (
    DEFAULT_RETRY_ON,
    MAX_FETCH_BODY,
    Attempt,
    CallbackOptions,
    PreparedRequest,
    final_url,
    form_body,
    parse_callback_url,
    prepare_request,
    retryable,
    send,
    str_params,
)

__all__ = [
    "Delivery",
    "FetchResult",
    "WebhookOutbox",
]

log = logging.getLogger(__name__)


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
    signature: str = ""  # the signing scheme's name ('' in rows older than schema v2)

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
            signature=row.get("signature") or "",
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
class _Pending:
    id: int
    call_uuid: str
    request: PreparedRequest
    options: CallbackOptions
    attempts: int = 0
    next_attempt_at: float | None = None  # wall clock


class WebhookOutbox:
    """Durable, ordered-per-call, retried webhook delivery (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float = 10,
        retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "softswitch/0.1",
        max_concurrency: int = 100,
        auth_token_for: Callable[[str], str | None] | None = None,
        fetch_policy: FetchPolicy | None = None,
    ) -> None:
        """``auth_token_for(call_uuid)``: the auth token to re-sign a resumed delivery of that
        call with (None: keep the headers signed when it was posted)."""
        self.store = store
        self.auth_token_for = auth_token_for
        #: Where callbacks and fetches may connect (None: the process's default policy).
        self.fetch_policy = fetch_policy
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
        #: Called each time a delivery is given up (metrics).
        self.on_delivery_failed: Callable[[], None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the HTTP session and resume every delivery a previous process left pending.

        Fetches interrupted by a crash are marked failed: the call that waited on them is gone.
        """
        if self._started:
            return
        if self._session is None:
            policy = self.fetch_policy or default_policy()
            self._session = aiohttp.ClientSession(
                connector=policy.connector(limit=self._max_concurrency),
            )
        self._started = True
        self._closed = False
        for row in self.store.pending_deliveries(kind="fetch"):
            self.store.finish_delivery(row["id"], "failed")
        self.resume(self.store.pending_deliveries(kind="post"))

    def resume(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Queue stored ``post`` deliveries (rows of the store) to be sent by this process:
        those a previous process left pending, or those taken over from a dead node."""
        resumed = 0
        for row in rows:
            req = self._resumed_request(row)
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
        return resumed

    def _resumed_request(self, row: Mapping[str, Any]) -> PreparedRequest:
        """The request of a stored delivery, re-signed by the scheme its row names when the
        call's auth token is known, else with the headers signed when it was posted."""
        method, params = row["method"], row["params"]
        token = self.auth_token_for(row["call_uuid"]) if self.auth_token_for else None
        scheme = row.get("signature") or ""
        if token and scheme:
            try:
                return prepare_request(
                    row["url"],
                    method,
                    params,
                    auth_token=token,
                    signature=scheme,
                    user_agent=row["headers"].get("User-Agent", self.user_agent),
                )
            except UnknownSignature:
                log.warning(
                    "webhook %d: signature scheme %r is not registered; resent as signed "
                    "when posted",
                    row["id"],
                    scheme,
                )
        return PreparedRequest(
            method=method,
            url=final_url(row["url"], method, params),
            body=None if method == "GET" else form_body(params),
            headers=dict(row["headers"]),
        )

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
        signature: str,
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
        form = str_params(params)
        delivery_id = self.store.add_delivery(
            call_uuid=call_uuid,
            event=event,
            url=clean_url,
            method=req.method,
            params=form,
            headers=req.headers,
            options=options.to_json(),
            signature=signature,
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
                result = await send(
                    self._session_or_fail(), p.request, p.options, timeout, follow=False,
                    policy=self.fetch_policy or default_policy(),
                )
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
            can_retry = retryable(result.failure, retry_on)
            elapsed = loop.time() - started
            out_of_time = total is not None and elapsed >= total
            if not can_retry or p.attempts >= max_attempts or out_of_time:
                self.store.finish_delivery(p.id, "failed")
                if self.on_delivery_failed is not None:
                    self.on_delivery_failed()
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

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("WebhookOutbox.start() has not been called")
        return self._session

    # ----------------------------------------------------------------- fetch

    async def fetch(
        self,
        url: str,
        method: str,
        params: Mapping[str, Any],
        *,
        auth_token: str | None,
        signature: str,
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
            params=str_params(params),
            headers=req.headers,
            options=options.to_json(),
            kind="fetch",
            signature=signature,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        per_try = self.timeout_s if timeout_s is None else timeout_s
        result = Attempt(error="no attempt made")
        n = 0
        while n < max(1, attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                result.error = f"deadline of {deadline_s:g}s exceeded ({result.error})"
                break
            n += 1
            async with self._sem:
                result = await send(
                    self._session_or_fail(),
                    req,
                    options,
                    min(per_try, remaining),
                    follow=True,
                    limit=max_body,
                    keep_body=True,
                    policy=self.fetch_policy or default_policy(),
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
            if not retryable(result.failure, retry_on) or n >= attempts:
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
