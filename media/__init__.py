"""media: the RTP engine. One media clock per process services every stream in a batch."""

import os as _os

# The media engine does small per-tick numpy products (the DTMF detector bank); a
# multi-threaded BLAS turns each into a burst of thread wake-ups across cores, which
# stalls the event loop and the 20 ms media clock. One process is meant to use one core:
# keep BLAS single-threaded unless the user set it (this only takes effect when numpy is
# imported after this package).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")
