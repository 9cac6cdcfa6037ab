"""sip: a SIP library, sans-I/O (message, transaction, dialog, INVITE sessions for both
sides, the :class:`sip.endpoint.Endpoint` that holds them), with a thin asyncio adapter in
:mod:`sip.aio` and an in-memory loop for tests in :mod:`sip.testing`. It knows nothing of
media: SDP bodies go in and come out as strings."""

__version__ = "0.1.0"
