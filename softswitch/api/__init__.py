"""HTTP APIs: the shared application (:mod:`.http`) and one package per dialect (:mod:`.plivo`)."""

from .http import create_app, openapi_document
from .plivo import ApiError, CallRequest, parse_call_request

__all__ = ["ApiError", "CallRequest", "create_app", "openapi_document", "parse_call_request"]
