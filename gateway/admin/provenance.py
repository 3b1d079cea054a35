"""The provenance plane: ``POST /admin/v1/provenance/identify`` (admins and auditors) says
whose a video file is, and ``GET /admin/v1/provenance/certificates`` hands out the
deployment's certificates, so outside tools can validate manifests against its root.

An upload is the request body itself (``Content-Type: video/mp4`` or any non-form type) or
a multipart form's ``file`` part. Either way it is bounded by
``provenance_identify_max_bytes`` (413 beyond, before the body is read) and kept in a
temporary file past ``provenance_spool_memory_bytes``, never whole in memory.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import IO, BinaryIO, cast

from flask import Response, jsonify, request

from gateway.admin.plane import admin_blueprint
from gateway.http.auth import current_operator, require_role
from gateway.http.current import current_state
from gateway.http.errors import ApiError
from gateway.services.provenance import certificates, identify_file
from keys.access.roles import RECORD_READERS

bp = admin_blueprint("provenance", __name__, "/admin/v1/provenance")

COPY_BYTES = 256 * 1024


def upload_limit() -> int:
    """Raise the request's body limit to the identify limit. Raises ApiError (413)."""
    limit = current_state().settings.provenance_identify_max_bytes
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"The file is larger than {limit} bytes.", "request_too_large")
    return limit


def spooled_upload() -> IO[bytes]:
    """The uploaded file, seekable. Raises ApiError (400 no file, 413 too large)."""
    limit = upload_limit()
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - the caller closes it
        max_size=current_state().settings.provenance_spool_memory_bytes, mode="w+b"
    )
    try:
        if request.mimetype == "multipart/form-data":
            part = request.files.get("file")
            if part is None:
                raise ApiError(400, "Send the video as the form's 'file' part.", "missing_file")
            shutil.copyfileobj(part.stream, spool, COPY_BYTES)
        else:
            stream, size = request.stream, 0
            while chunk := stream.read(COPY_BYTES):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, f"The file is larger than {limit} bytes.", "request_too_large"
                    )
                spool.write(chunk)
        if spool.tell() == 0:
            raise ApiError(400, "The upload is empty: send a video file.", "missing_file")
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


@bp.post("/identify")
@require_role(*RECORD_READERS)
def identify() -> Response:
    with spooled_upload() as upload:
        found = identify_file(
            current_state().store, cast(BinaryIO, upload), current_operator().actor
        )
    return jsonify(found.as_json())


@bp.get("/certificates")
@require_role(*RECORD_READERS)
def list_certificates() -> Response:
    return jsonify(certificates(current_state().store))
