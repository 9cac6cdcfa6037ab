"""The asyncio shell of the SIP stack: transports, the resolver and the user agent."""

from .ua import Credentials, GatewayConfig, OutboundCall, UserAgent, UserAgentConfig

__all__ = ["Credentials", "GatewayConfig", "OutboundCall", "UserAgent", "UserAgentConfig"]
