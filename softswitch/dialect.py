"""What the core asks of an API dialect: names for its states, causes and callback parameters.

The server registers one :class:`Dialect` with the :class:`~softswitch.call.CallManager`;
the core calls into it only through this protocol and never imports ``softswitch.api``.
Each dialect package under ``softswitch.api`` implements it with its own tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .model import CallbackEvent, CallEnd
from .signing import Signer
from .state import CallState

if TYPE_CHECKING:
    from .app.verbs import Document
    from .call import Call

__all__ = ["Dialect"]


class Dialect(Protocol):
    #: Stored with each call record.
    name: str
    #: How the webhook outbox signs this dialect's callbacks and fetches: the name of a
    #: scheme in :mod:`softswitch.signing` (``"none"``: unsigned).
    signature: str
    #: The signing schemes the dialect brings, by name; the server registers them
    #: (:func:`softswitch.signing.register_signer`) before the outbox resumes old deliveries.
    signers: Mapping[str, Signer]

    def status_name(self, state: CallState, end: CallEnd | None) -> str:
        """The status users see for a call in ``state`` (and, when over, ended by ``end``)."""
        ...

    def end_fields(self, end: CallEnd) -> dict[str, Any]:
        """Record columns describing the end: ``hangup_cause_code``, ``hangup_cause_name``,
        ``hangup_source``."""
        ...

    def callback_params(self, call: Call, event: CallbackEvent) -> dict[str, str]:
        """The form parameters of ``event``'s request for ``call``."""
        ...

    def machine_fields(self, call: Call, result: Any) -> dict[str, Any]:
        """What the record keeps of a machine-detection decision (``media.amd.AmdResult``)."""
        ...

    def recording_params(self, call: Call, recording: Mapping[str, Any]) -> dict[str, str]:
        """The parameters of a finished API recording's callback (``recording``: ``api_id``,
        ``url``, ``recording_id``, ``duration_ms``, ``start_ms``, ``end_ms``)."""
        ...

    def parse_document(self, document: str | bytes, *, max_bytes: int = ...) -> Document:
        """The dialect's call-application vocabulary: a fetched document as the neutral
        executor's verbs and result-parameter names (:mod:`softswitch.app`). Raises
        :class:`~softswitch.app.document.XmlAppError` for a document it cannot run."""
        ...

    def recording_url_base(self, public_url: str, account_id: str) -> str:
        """Public URL prefix under which an account's recording files are served."""
        ...

    def interrupted_hangup(
        self, record: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str, str, dict[str, str]] | None:
        """The hangup callback of a call a crash of the previous process ended (its record
        was closed at start-up): ``(record fields to update, url, method, params)``, or None
        when it has none."""
        ...
