"""The asyncio shell of the SIP stack: transports, the resolver, and the user agent that
drives a :class:`sip.endpoint.Endpoint` with them."""

from .ua import (
    AnswerHandler,
    Credentials,
    GatewayConfig,
    InboundCall,
    OfferHandler,
    OutboundCall,
    UserAgent,
    UserAgentConfig,
)

__all__ = [
    "AnswerHandler",
    "Credentials",
    "GatewayConfig",
    "InboundCall",
    "OfferHandler",
    "OutboundCall",
    "UserAgent",
    "UserAgentConfig",
]
