"""Give freed model memory back to the OS.

glibc keeps freed heap in its arenas, so after a swap the old model's pages stay resident
(measured: a 500 MB model left ~1 GB RSS after one swap). malloc_trim(0) returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        lib.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to trim
    return lib


def trim() -> bool:
    lib = _libc()
    return bool(lib is not None and lib.malloc_trim(0))
