"""One webhook HTTP request: its shape, its signature, one attempt and the retry classes.

The durable outbox (:mod:`softswitch.webhooks`) decides *when* to send and how often; this
module holds what one attempt is, so the outbox is the queue and nothing else:

* :func:`prepare_request` shapes a request (GET: the parameters appended to the query; POST:
  an ``application/x-www-form-urlencoded`` form) and signs it with the scheme named, looked
  up in :mod:`softswitch.signing`;
* :func:`parse_callback_url` reads the per-URL options of a URL fragment
  (``#ct=2000&rt=40000&tt=55000&rc=1&rp=ct,rt``: connect timeout ms (100-10000), read timeout
  ms (100-40000), total timeout ms over all attempts (100-55000), retry count (0-5) and retry
  policy (``4xx``, ``5xx``, ``ct``, ``rt``, ``all``), the "callback configuration" convention
  of the hosted voice APIs).  The fragment is never sent;
* :func:`send` makes one attempt and classifies its failure (``ct``, ``rt``, ``4xx``,
  ``5xx``, ``429``, ``redirect``, ``body``, ``denied``: refused by :mod:`softswitch.netpolicy`,
  never retried); :func:`retryable` says whether a class is retried.

Retry classes (chosen, documented here and in the example config): success is any 2xx.
Redirects are not followed for notifications (a 3xx is a permanent failure: the signature
covers the URL, so re-sending elsewhere would not validate) and are followed (at most 5) for
fetches, where answer documents are often served from object storage behind one.  Retried:
connection failures and timeouts, 5xx, 429 (``Retry-After`` honoured up to the backoff cap).
Any other 4xx is permanent after one attempt: the receiver has rejected the request and
sending it again would not change its mind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import yarl

from .netpolicy import FetchPolicy, denied_reason, fetching
from .signing import ParamValue, get_signer, param_values

__all__ = [
    "DEFAULT_RETRY_ON",
    "MAX_FETCH_BODY",
    "Attempt",
    "CallbackOptions",
    "PreparedRequest",
    "final_url",
    "form_body",
    "parse_callback_url",
    "prepare_request",
    "retryable",
    "send",
    "str_params",
]

MAX_FETCH_BODY = 1 << 20  # answer documents larger than 1 MiB are refused (bounded buffers)
DRAIN_BODY = 64 << 10  # at most this much of a notification response is read, then dropped


@dataclass(frozen=True)
class CallbackOptions:
    """Per-URL overrides from a URL fragment (``#ct=..&rt=..&tt=..&rc=..&rp=..``)."""

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
    """Strip the fragment off ``url`` and read the callback options it carries.

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


def str_params(params: Mapping[str, Any]) -> dict[str, ParamValue]:
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
    signature: str,
    user_agent: str = "softswitch/0.1",
) -> PreparedRequest:
    """Shape one callback request and sign it with the scheme named ``signature``.

    ``url`` must already be fragment-free.  GET appends the parameters to the URL's query
    string; POST sends them as ``application/x-www-form-urlencoded``.  No ``auth_token``, no
    signature.  An unregistered scheme raises :class:`~softswitch.signing.UnknownSignature`
    (a ValueError).  Pure: no I/O.
    """
    method = method.upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"callback method must be GET or POST, got {method!r}")
    signer = get_signer(signature)
    form = str_params(params)
    headers = {"User-Agent": user_agent}
    if method == "GET":
        # Signed as it goes on the wire: the HTTP client (yarl) normalizes the query's
        # percent-encoding (``%3A`` → ``:``), and the receiver checks what it received.
        target = str(yarl.URL(final_url(url, method, form)))
        body = None
        signed_params: Mapping[str, ParamValue] = {}
    else:
        target = url
        body = form_body(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed_params = form
    if auth_token:
        headers.update(signer(method, target, signed_params, auth_token))
    return PreparedRequest(method=method, url=target, body=body, headers=headers)


def form_body(form: Mapping[str, ParamValue]) -> bytes:
    """``form`` as an ``application/x-www-form-urlencoded`` body."""
    return urlencode(list(_pairs(form))).encode("ascii")


def _pairs(form: Mapping[str, ParamValue]) -> Iterator[tuple[str, str]]:
    for k, v in form.items():
        for item in param_values(v):
            yield k, item


@dataclass
class Attempt:
    """The outcome of one HTTP attempt."""

    status: int | None = None
    error: str | None = None
    failure: str | None = None  # retry class: 'ct' | 'rt' | '4xx' | '5xx' | '429' | 'redirect'
    body: str = ""
    content_type: str | None = None
    retry_after: float | None = None
    duration_ms: float = 0.0


async def send(
    session: aiohttp.ClientSession,
    req: PreparedRequest,
    options: CallbackOptions,
    timeout_s: float,
    *,
    follow: bool,
    limit: int = DRAIN_BODY,
    keep_body: bool = False,
    policy: FetchPolicy | None = None,
) -> Attempt:
    """One attempt with ``timeout_s`` in all; never raises for network trouble.

    ``follow``: follow redirects (at most 5); ``limit``: read at most this much of the body;
    ``keep_body``: decode it into :attr:`Attempt.body` (a 2xx larger than ``limit`` is then
    the ``body`` failure, never retried).
    """
    timeout = aiohttp.ClientTimeout(
        total=timeout_s,
        sock_connect=options.connect_timeout_s,
        sock_read=options.read_timeout_s,
    )
    t0 = time.perf_counter()
    result = Attempt()
    try:
        with fetching(policy, req.url) as extra_headers:
            async with session.request(
                req.method,
                req.url,
                data=req.body,
                headers={**req.headers, **extra_headers} if extra_headers else req.headers,
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
                result.failure = status_class(resp.status)
                result.error = f"HTTP {resp.status}"
                if result.failure == "redirect":
                    result.error += f" redirect to {resp.headers.get('Location', '?')} not followed"
                result.retry_after = retry_after_s(resp.headers.get("Retry-After"))
    except aiohttp.ConnectionTimeoutError as exc:
        result.failure, result.error = "ct", f"connect timeout: {exc}"
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        result.failure, result.error = "rt", f"timeout: {exc or 'no response in time'}"
    except aiohttp.TooManyRedirects as exc:
        result.failure, result.error = "redirect", f"too many redirects: {exc}"
    except (aiohttp.ClientError, OSError) as exc:
        denied = denied_reason(exc)
        if denied is not None:
            # softswitch.netpolicy refused the address before connecting: never retried.
            result.failure, result.error = "denied", denied
        else:
            result.failure, result.error = "ct", f"{type(exc).__name__}: {exc}"
    finally:
        result.duration_ms = (time.perf_counter() - t0) * 1000.0
    return result


def final_url(url: str, method: str, params: Mapping[str, Any]) -> str:
    """The URL a request goes to: for GET, ``url`` with the parameters appended to its query."""
    if method.upper() != "GET":
        return url
    parts = urlsplit(url)
    encoded = urlencode(list(_pairs(str_params(params))))
    query = "&".join(q for q in (parts.query, encoded) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def status_class(status: int) -> str:
    """The retry class of a non-2xx status."""
    if status == 429:
        return "429"
    if 300 <= status < 400:
        return "redirect"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


def retryable(failure: str, retry_on: frozenset[str]) -> bool:
    """Whether a failure of class ``failure`` is retried under the policy ``retry_on``."""
    if failure in ("redirect", "denied"):
        return False
    if failure == "429":
        return "429" in retry_on or "4xx" in retry_on
    return failure in retry_on


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds (None when absent or not a number)."""
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
