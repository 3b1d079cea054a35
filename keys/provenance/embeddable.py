"""The C2PA C API's embeddable signing, which c2pa-python ships in its native library
(``libc2pa_c``) but does not wrap yet: a manifest whose size is fixed before the asset's
bytes are known, hashed and signed apart from writing the file.

Only the library's own documented functions are declared here (contentauth/c2pa-c,
``include/c2pa.h``, docs/embeddable-api.md), on the handles of c2pa-python's ``Builder``
(whose ``Context`` carries the ``Signer``, as these calls require): the JUMBF, the COSE
signature, the BMFF hash and the MP4 ``uuid`` box are all the library's.

- ``c2pa_builder_placeholder(builder, format)``: the manifest as it will be embedded (for
  ``video/mp4`` a top-level C2PA ``uuid`` box) with its hard binding (``c2pa.hash.bmff.v3``),
  its final size fixed;
- ``c2pa_builder_update_hash_from_stream(builder, format, stream)``: the binding's hash,
  computed by the library over the asset (skipping the manifest box);
- ``c2pa_builder_sign_embeddable(builder, format)``: the signed manifest, padded to the
  placeholder's size.
"""

from __future__ import annotations

import ctypes
from typing import Any, BinaryIO

import c2pa
from c2pa import c2pa as _native

_lib: Any = _native._lib
_BYTES = ctypes.POINTER(ctypes.c_ubyte)

_lib.c2pa_builder_placeholder.argtypes = [
    ctypes.POINTER(_native.C2paBuilder),
    ctypes.c_char_p,
    ctypes.POINTER(_BYTES),
]
_lib.c2pa_builder_placeholder.restype = ctypes.c_int64
_lib.c2pa_builder_update_hash_from_stream.argtypes = [
    ctypes.POINTER(_native.C2paBuilder),
    ctypes.c_char_p,
    ctypes.POINTER(_native.C2paStream),
]
_lib.c2pa_builder_update_hash_from_stream.restype = ctypes.c_int
_lib.c2pa_builder_sign_embeddable.argtypes = [
    ctypes.POINTER(_native.C2paBuilder),
    ctypes.c_char_p,
    ctypes.POINTER(_BYTES),
]
_lib.c2pa_builder_sign_embeddable.restype = ctypes.c_int64


class EmbeddableError(c2pa.C2paError):  # type: ignore[misc]
    """The native library refused; the message is its own."""


def _last_error() -> str:
    raw = _lib.c2pa_error()
    if not raw:
        return "c2pa failed without a message"
    try:
        return ctypes.string_at(raw).decode("utf-8", "replace")
    finally:
        _lib.c2pa_free(raw)


def _take(size: int, out: Any) -> bytes:
    """The bytes the library returned (freed with ``c2pa_free``), or EmbeddableError."""
    if size < 0 or not out:
        raise EmbeddableError(_last_error())
    try:
        return ctypes.string_at(out, size)
    finally:
        _lib.c2pa_free(out)


def placeholder(builder: c2pa.Builder, mime: str) -> bytes:
    """The builder's manifest as embeddable placeholder bytes of its final size."""
    out = _BYTES()
    with builder._exclusive_native_call():
        size = _lib.c2pa_builder_placeholder(builder._handle, mime.encode(), ctypes.byref(out))
    return _take(size, out)


def update_hash_from_stream(builder: c2pa.Builder, mime: str, source: BinaryIO) -> None:
    """Let the library compute the hard binding's hash over the asset in ``source``."""
    with c2pa.Stream(source) as stream, builder._exclusive_native_call():
        result = _lib.c2pa_builder_update_hash_from_stream(
            builder._handle, mime.encode(), stream._stream
        )
    if result < 0:
        raise EmbeddableError(_last_error())


def sign_embeddable(builder: c2pa.Builder, mime: str) -> bytes:
    """The signed manifest, the placeholder's size."""
    out = _BYTES()
    with builder._exclusive_native_call():
        size = _lib.c2pa_builder_sign_embeddable(builder._handle, mime.encode(), ctypes.byref(out))
    return _take(size, out)
