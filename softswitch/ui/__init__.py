"""The operators' web page: static files (``static/``) served by ``softswitch.api.ops``."""
