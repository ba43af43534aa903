"""Keep freed host memory for reuse instead of handing it back to the OS (glibc's malloc).

torch's CPU allocator takes every tensor from malloc. glibc serves blocks at or above its
mmap threshold (128 KiB, raised on the fly up to 32 MiB) with fresh mappings that it unmaps
on free, and trims the top of its heap once more than 128 KiB is free there. A CPU training
step allocates and frees tens to hundreds of MB of views and activations, so every step
faults that memory back in page by page and the kernel zeroes it again. Raising both
thresholds lets the next step reuse the blocks the last one freed: AlexNet steps at 224 px
ran 1.2x faster and ResNet-18 steps 1.4x on the project's VM (``bench/RESULTS.md``). The
price: the process keeps the memory of its largest step between steps instead of returning
it (its peak is the same). ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the
environment do the same for any process.
"""

from __future__ import annotations

import ctypes
import sys

#: mallopt parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD: int = -1
M_MMAP_THRESHOLD: int = -3

#: mallopt takes a C int.
_INT_MAX: int = 2**31 - 1


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = _INT_MAX) -> bool:
    """Serve blocks below mmap_threshold bytes from the heap and trim it only above trim_threshold.

    Process-wide and lasting (worker processes forked later inherit it). Values above a C
    int are clamped.

    Returns:
        True when glibc accepted both settings; False without glibc (macOS, Windows, musl's
        mallopt is a stub) or when it refused a setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, min(mmap_threshold, _INT_MAX))) and bool(
        mallopt(M_TRIM_THRESHOLD, min(trim_threshold, _INT_MAX))
    )
