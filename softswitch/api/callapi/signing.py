"""``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL (and, for POST, the sorted form
parameters) keyed by the account's auth token, the shared
:func:`softswitch.signing.hmac_sha1_url_params`; ``twilio.request_validator.RequestValidator``
accepts it. Registered by the server under :data:`SIGNATURE`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from ...signing import Signer, url_params_signer

__all__ = ["HEADER", "SIGNATURE", "SIGNERS"]

HEADER = "X-Twilio-Signature"
#: The scheme's name in the signer registry (stored with each durable delivery).
SIGNATURE = "x-twilio-signature"
SIGNERS: Mapping[str, Signer] = {SIGNATURE: cast(Signer, url_params_signer(HEADER))}
