"""softswitch: call control over the SIP user agent and the media engine."""

__version__ = "0.1.0"

from softswitch.process import limit_blas_threads as _limit_blas_threads

# Before anything imports numpy (see :func:`softswitch.process.limit_blas_threads`).
_limit_blas_threads()
