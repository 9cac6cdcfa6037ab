"""CallAPI dialect (seed 004; Twilio's Calls resource): ``/call/2012-04-24/Accounts/{sid}``
and ``/2010-04-01/Accounts/{sid}``.

* :mod:`.request`: the create and update parameters → :class:`~softswitch.model.CallSpec`;
* :mod:`.codes`: call statuses, call SIDs (``CA`` + 32 hex) and RFC 2822 times;
* :mod:`.shapes`: the Call resource JSON; :mod:`.filters`: the list filters;
* :mod:`.signing`: ``X-Twilio-Signature``;
* :mod:`.twiml`: the TwiML vocabulary on the neutral executor;
* :mod:`.dialect`: :class:`CallApiDialect`; :mod:`.routes` and :mod:`.openapi`: the HTTP side.
"""

from __future__ import annotations

from .dialect import CallApiDialect
from .routes import http_dialect
from .signing import SIGNATURE, SIGNERS

__all__ = ["SIGNATURE", "SIGNERS", "CallApiDialect", "http_dialect"]
