"""Plivo v1 callback signatures: ``X-Plivo-Signature-V3`` and the older ``-V2``.

:func:`sign_request` is this dialect's :class:`~softswitch.signing.Signer`, registered by the
server under :data:`SIGNATURE` (``PlivoDialect.signers``). It adds
``X-Plivo-Signature-V3`` / ``-Ma-V3`` / ``-V3-Nonce`` and ``X-Plivo-Signature-V2`` /
``-Ma-V2`` / ``-V2-Nonce``, computed exactly as the official plivo SDK's
``validate_v3_signature`` and ``validate_signature`` check them (there are no subaccounts
here, so the ``Ma`` headers carry the same value).

The legacy framework's ``X-Plivo-Signature`` (HMAC-SHA1 over the URL and the sorted form)
is the neutral :func:`softswitch.signing.hmac_sha1_url_params`, shared with the CallAPI
dialect's ``X-Twilio-Signature``: those dialects register it with their header through
:func:`softswitch.signing.url_params_signer`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlparse, urlunparse

from ...signing import Params, Signer, hmac_b64, param_values

__all__ = ["SIGNATURE", "SIGNERS", "make_nonce", "sign_request", "sign_v2", "sign_v3"]

#: The scheme name :class:`~softswitch.api.plivo.PlivoDialect` signs with.
SIGNATURE = "plivo-v3"


def _base_url(url: str) -> tuple[str, str]:
    """``scheme://netloc/path`` and the raw query, split the way the plivo SDK splits them."""
    p = urlparse(url)
    return urlunparse((p.scheme, p.netloc, p.path, "", "", "")), p.query


def _sorted_query(params: Mapping[str, list[str]]) -> str:
    # "k=v&k=v" over sorted keys, multiple values sorted: the SDK's get_sorted_query_string.
    return "&".join("&".join(f"{k}={v}" for v in sorted(params[k])) for k in sorted(params))


def _sorted_params(params: Params) -> str:
    # "k1v1k2v2" over sorted keys: the SDK's get_sorted_params_string.
    return "".join(
        "".join(f"{k}{v}" for v in sorted(param_values(params[k]))) for k in sorted(params)
    )


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
        merged: dict[str, list[str]] = {k: param_values(v) for k, v in params.items()}
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
    return hmac_b64(auth_token, f"{signed}.{nonce}", hashlib.sha256)


def sign_v2(url: str, nonce: str, auth_token: str) -> str:
    """``X-Plivo-Signature-V2``: base64 HMAC-SHA256 over the URL without query, then the nonce.

    What ``plivo.utils.validate_signature`` checks.
    """
    base, _ = _base_url(url)
    return hmac_b64(auth_token, base + nonce, hashlib.sha256)


def make_nonce() -> str:
    """A 20-digit random nonce, the shape of Plivo's ``X-Plivo-Signature-V3-Nonce``."""
    return str(secrets.randbelow(9 * 10**19) + 10**19)


def sign_request(
    method: str, url: str, params: Params, auth_token: str, *, nonce: str | None = None
) -> dict[str, str]:
    """The V3 and V2 headers of one request, with a fresh nonce unless one is given."""
    nonce = nonce or make_nonce()
    v3 = sign_v3(url, params, nonce, auth_token, method)
    v2 = sign_v2(url, nonce, auth_token)
    return {
        "X-Plivo-Signature-V3": v3,
        "X-Plivo-Signature-Ma-V3": v3,
        "X-Plivo-Signature-V3-Nonce": nonce,
        "X-Plivo-Signature-V2": v2,
        "X-Plivo-Signature-Ma-V2": v2,
        "X-Plivo-Signature-V2-Nonce": nonce,
    }


#: What the server registers for this dialect (:func:`softswitch.signing.register_signer`).
SIGNERS: Mapping[str, Signer] = {SIGNATURE: sign_request}
