"""sip: a SIP user agent, sans-I/O core (message, transaction, dialog, invite session)
with a thin asyncio shell in :mod:`sip.aio`."""

__version__ = "0.1.0"
