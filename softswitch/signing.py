"""Request signing for the webhook outbox: a registry of named schemes.

The outbox (:mod:`softswitch.webhooks`) knows no scheme. Each dialect package holds its own
and names one in :attr:`softswitch.dialect.Dialect.signature`; the server registers the
dialect's :attr:`~softswitch.dialect.Dialect.signers` at start, *before* the outbox resumes
what a previous process left pending, because every durable delivery row stores the name of
its scheme.

A :class:`Signer` is ``(method, url, params, auth_token) -> headers``: ``url`` is the final
request URL (for GET the parameters are already in its query and ``params`` is empty; for
POST ``params`` is the form), and the headers it returns are added to the request.

One algorithm is shared by several dialects and lives here under a neutral name:
:func:`hmac_sha1_url_params`, base64 HMAC-SHA1 over the URL followed by the sorted form
parameters; :func:`url_params_signer` puts it in whichever header a dialect names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "UNSIGNED",
    "Params",
    "ParamValue",
    "Signer",
    "UnknownSignature",
    "get_signer",
    "hmac_b64",
    "hmac_sha1_url_params",
    "param_values",
    "register_signer",
    "signer_names",
    "unregister_signer",
    "url_params_signer",
]

ParamValue = str | Sequence[str]
Params = Mapping[str, ParamValue]

#: The scheme that adds no header (always registered).
UNSIGNED = "none"


class Signer(Protocol):
    def __call__(self, method: str, url: str, params: Params, auth_token: str) -> dict[str, str]:
        """The headers that sign one request (``method`` is upper case)."""
        ...


class UnknownSignature(ValueError):
    """No signer is registered under this name."""


def _unsigned(method: str, url: str, params: Params, auth_token: str) -> dict[str, str]:
    return {}


_SIGNERS: dict[str, Signer] = {UNSIGNED: _unsigned}


def register_signer(name: str, signer: Signer, *, replace: bool = False) -> None:
    """Make ``signer`` available as ``name``.

    Registering the same object again is a no-op (servers and tests start more than once in
    a process); another signer under a taken name needs ``replace=True``.
    """
    if not name:
        raise ValueError("a signature scheme needs a name")
    current = _SIGNERS.get(name)
    if current is not None and current is not signer and not replace:
        raise ValueError(f"signature scheme {name!r} is already registered")
    _SIGNERS[name] = signer


def unregister_signer(name: str) -> None:
    """Forget ``name`` (tests); the unsigned scheme stays."""
    if name != UNSIGNED:
        _SIGNERS.pop(name, None)


def get_signer(name: str) -> Signer:
    """The signer registered as ``name``; :class:`UnknownSignature` if there is none."""
    try:
        return _SIGNERS[name]
    except KeyError:
        known = ", ".join(sorted(_SIGNERS))
        raise UnknownSignature(f"unknown signature scheme {name!r} (registered: {known})") from None


def signer_names() -> list[str]:
    """The registered scheme names, sorted."""
    return sorted(_SIGNERS)


# --------------------------------------------------------------------------- shared pieces


def param_values(value: ParamValue) -> list[str]:
    """A form value as the list of its values (a repeated name has several)."""
    return [value] if isinstance(value, str) else [str(v) for v in value]


def hmac_b64(key: str, message: str, digest: Any) -> str:
    """base64 of the HMAC of ``message`` keyed by ``key`` (both UTF-8)."""
    mac = hmac.new(key.encode("utf-8"), message.encode("utf-8"), digest).digest()
    return base64.b64encode(mac).decode("ascii")


def hmac_sha1_url_params(url: str, params: Params, auth_token: str) -> str:
    """base64 HMAC-SHA1 over the full URL (query included, as requested) followed by each
    form parameter as name+value, names sorted; a repeated name contributes each distinct
    value in sorted order. For GET, pass the full URL and no params.

    The widely published "URL + sorted POST parameters" request-signing algorithm; several
    dialects sign with it, each in its own header.
    """
    s = url
    for name in sorted(params):
        for value in sorted(set(param_values(params[name]))):
            s += name + value
    return hmac_b64(auth_token, s, hashlib.sha1)


def url_params_signer(header: str) -> Signer:
    """A :class:`Signer` putting :func:`hmac_sha1_url_params` in ``header``."""

    def sign(method: str, url: str, params: Params, auth_token: str) -> dict[str, str]:
        return {header: hmac_sha1_url_params(url, params, auth_token)}

    sign.__qualname__ = f"url_params_signer({header!r})"
    return sign
