"""The HTTP application (kept for its import path): see :mod:`softswitch.api.http` for the
shared plumbing and :mod:`softswitch.api.plivo.routes` for the Plivo v1 routes."""

from __future__ import annotations

from .http import API_ID_KEY, BULK_MAX_KEY, MANAGER_KEY, STORE_KEY, create_app, openapi_document

__all__ = ["API_ID_KEY", "BULK_MAX_KEY", "MANAGER_KEY", "STORE_KEY", "create_app", "openapi_document"]
