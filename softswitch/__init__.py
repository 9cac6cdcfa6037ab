"""softswitch: call control over the SIP user agent and the media engine."""

__version__ = "0.1.0"
