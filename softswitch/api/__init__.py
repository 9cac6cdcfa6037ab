"""HTTP APIs: one aiohttp application (:mod:`.app`), one module per dialect (:mod:`.plivo`)."""

from .app import create_app, openapi_document
from .plivo import ApiError, CallRequest, parse_call_request

__all__ = ["ApiError", "CallRequest", "create_app", "openapi_document", "parse_call_request"]
