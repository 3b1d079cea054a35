"""The C2PA C API's data-hashed embeddable signing, which c2pa-python ships in its native
library (``libc2pa_c``) but does not wrap yet: a manifest whose hard binding is a hash the
caller already has, signed in O(manifest) instead of a rewrite of the whole file.

Only the library's own documented functions are declared here (contentauth/c2pa-c,
``include/c2pa.h``; the "Data-Hashed Embeddable Signing Guide"), on the handles of
c2pa-python's ``Builder`` and ``Signer``: the JUMBF, the COSE signature and the MP4 ``uuid``
box are all the library's.

- ``c2pa_builder_data_hashed_placeholder(builder, reserve, format)``: the manifest as it
  will be embedded (for ``video/mp4`` a top-level C2PA ``uuid`` box), its size fixed;
- ``c2pa_builder_sign_data_hashed_embeddable(builder, signer, data_hash_json, format,
  NULL)``: the signed manifest, padded to the placeholder's size, over the ``DataHash``
  given (``NULL`` asset: "use pre-calculated hashes").
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

import c2pa
from c2pa import c2pa as _native

_lib: Any = _native._lib
_BYTES = ctypes.POINTER(ctypes.c_ubyte)

_lib.c2pa_builder_data_hashed_placeholder.argtypes = [
    ctypes.POINTER(_native.C2paBuilder),
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.POINTER(_BYTES),
]
_lib.c2pa_builder_data_hashed_placeholder.restype = ctypes.c_int64
_lib.c2pa_builder_sign_data_hashed_embeddable.argtypes = [
    ctypes.POINTER(_native.C2paBuilder),
    ctypes.POINTER(_native.C2paSigner),
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.POINTER(_native.C2paStream),
    ctypes.POINTER(_BYTES),
]
_lib.c2pa_builder_sign_data_hashed_embeddable.restype = ctypes.c_int64


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


def reserve_size(signer: c2pa.Signer) -> int:
    """The room the signer's signature needs in the manifest (its certificate chain too)."""
    with signer._native_call():
        size = int(_lib.c2pa_signer_reserve_size(signer._handle))
    if size < 0:
        raise EmbeddableError(_last_error())
    return size


def data_hashed_placeholder(builder: c2pa.Builder, reserve: int, mime: str) -> bytes:
    """The builder's manifest as embeddable placeholder bytes of its final size."""
    out = _BYTES()
    with builder._exclusive_native_call():
        size = _lib.c2pa_builder_data_hashed_placeholder(
            builder._handle, reserve, mime.encode(), ctypes.byref(out)
        )
    return _take(size, out)


def sign_data_hashed(
    builder: c2pa.Builder,
    signer: c2pa.Signer,
    exclusions: list[tuple[int, int]],
    sha256: bytes,
    mime: str,
) -> bytes:
    """Sign the builder's manifest with a ``c2pa.hash.data`` hard binding: ``sha256`` is the
    SHA-256 of the asset's bytes outside ``exclusions`` ((start, length) each), computed by
    the caller. Returns the embeddable manifest, the placeholder's size."""
    data_hash = {
        "exclusions": [{"start": start, "length": length} for start, length in exclusions],
        "name": "jumbf manifest",
        "alg": "sha256",
        "hash": list(sha256),
        "pad": [],
    }
    out = _BYTES()
    with builder._exclusive_native_call(), signer._native_call():
        size = _lib.c2pa_builder_sign_data_hashed_embeddable(
            builder._handle,
            signer._handle,
            json.dumps(data_hash).encode(),
            mime.encode(),
            None,
            ctypes.byref(out),
        )
    return _take(size, out)
