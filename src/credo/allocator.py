"""Keep freed memory in the process heap, so big CPU tensors are not page-faulted in afresh on every call.

glibc serves each allocation over its mmap threshold (at most 32 MB) by its own `mmap` and hands it back on free, so
every fresh 51 x 262k logit tensor of a batched generation, or the quick look's KL over the vocabulary, pays its page
faults again (measured side by side by bench/hyper_speed.py). PyTorch advises jemalloc or tcmalloc for CPU inference
for the same reason; this needs nothing installed. A no-op off glibc; CREDO_KEEP_HEAP=0 leaves glibc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30  # freed memory above this at the heap's top goes back to the system


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and keep up to 1 GiB of freed memory there; True if glibc took it."""
    if os.environ.get("CREDO_KEEP_HEAP", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
