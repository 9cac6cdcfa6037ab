"""The operators' web page (``/ui/``) and the JSON it reads (``/ui/api/``); see :mod:`.routes`."""

from .routes import http_dialect

__all__ = ["http_dialect"]
