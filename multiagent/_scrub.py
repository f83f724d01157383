"""Freed heap memory scrubbed, so stale bytes never reach a file through a library's buffer.

hnswlib (inside Chroma) allocates its index with ``malloc`` and saves whole element records,
unused link slots included: whatever the process had freed there before, a raw task text among
it, can land in ``data_level0.bin``. glibc's ``M_PERTURB`` fills every block it hands out (except
``calloc``'s) and every block it takes back with a constant, so no stale byte survives. Nothing
in the standard library or on PyPI sets this option, hence this module; it is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import functools
import sys

_M_PERTURB = -6  # glibc's mallopt parameter (malloc.h)
_PERTURB_BYTE = 0x5A


@functools.cache
def scrub_heap() -> bool:
    """Ask glibc to scrub allocated and freed blocks from now on; whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_PERTURB, _PERTURB_BYTE))
