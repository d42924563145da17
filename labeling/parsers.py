"""Request parsers and the upload handler: NIfTI bytes in, never more than the limit held.

An upload costs at most ``MRIANNOT_MAX_UPLOAD_BYTES`` of memory, decided before the body is
read where the request says its size, and while it arrives where it does not:

- a ``Content-Length`` over the limit is refused (413) before a byte of the body is read,
  by :class:`NiftiParser` (a raw body) and :class:`UploadLimitHandler` (multipart, with a
  small allowance for the envelope around the file);
- a raw body is read a chunk at a time and refused the moment it passes the limit;
- multipart file bytes are counted as they arrive, by the first of ``FILE_UPLOAD_HANDLERS``
  (``mriannot/settings.py``), and refused the moment they pass the limit. Django spools a
  file over ``FILE_UPLOAD_MAX_MEMORY_SIZE`` to a temporary file, not to memory; whatever the
  way in (a DRF parser, or ``request.POST`` read by the CSRF check of a session), the same
  handler counts.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from rest_framework.parsers import BaseParser

from mriannot.errors import TooLarge

#: Bytes read from a raw body at a time.
READ_CHUNK = 1 << 20
#: What a multipart body may carry beyond the file: boundaries, part headers, small fields.
MULTIPART_ENVELOPE = 64 * 1024


def _declared_length(meta) -> int | None:
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None


def refuse_declared_over_limit(meta, *, allowance: int = 0) -> None:
    """Refuse (413) a request whose ``Content-Length`` says it is over the upload limit.

    Called before the body is read, so such a request costs nothing but its headers.
    """
    limit = settings.MRIANNOT_MAX_UPLOAD_BYTES
    declared = _declared_length(meta)
    if declared is not None and declared > limit + allowance:
        raise TooLarge(
            f"The upload is {declared} bytes (Content-Length); the limit is {limit} bytes "
            "(MRIANNOT_MAX_UPLOAD_BYTES). Compress it as .nii.gz or ask an admin to raise the limit."
        )


def _over_limit(limit: int) -> TooLarge:
    return TooLarge(
        f"The upload is larger than {limit} bytes (MRIANNOT_MAX_UPLOAD_BYTES); it was refused as it "
        "arrived. Compress it as .nii.gz or ask an admin to raise the limit."
    )


def upload_bytes_check(upload) -> None:
    """Refuse (413) an uploaded file (a multipart field) over the limit, without reading it.

    For a file read in pieces rather than whole (a .zip of scans, labeling/archives.py).
    """
    limit = settings.MRIANNOT_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise _over_limit(limit)


def upload_bytes(upload) -> bytes:
    """The bytes of an uploaded file (a multipart field), refused (413) unread when over the limit."""
    upload_bytes_check(upload)
    return upload.read()


class NiftiParser(BaseParser):
    """Takes the body as bytes: ``application/octet-stream``, ``application/gzip`` or ``application/x-nifti``."""

    media_type = "application/octet-stream"
    media_types = ("application/octet-stream", "application/gzip", "application/x-gzip", "application/x-nifti")

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        limit = settings.MRIANNOT_MAX_UPLOAD_BYTES
        request = (parser_context or {}).get("request")
        if request is not None:
            refuse_declared_over_limit(request.META)
        if stream is None:
            return b""
        body = io.BytesIO()  # getvalue() hands over its buffer: the body is held once
        while chunk := stream.read(READ_CHUNK):
            body.write(chunk)
            if body.tell() > limit:
                raise _over_limit(limit)
        return body.getvalue()


class GzipParser(NiftiParser):
    media_type = "application/gzip"


class XGzipParser(NiftiParser):
    media_type = "application/x-gzip"


class XNiftiParser(NiftiParser):
    media_type = "application/x-nifti"


NIFTI_PARSERS = [NiftiParser, GzipParser, XGzipParser, XNiftiParser]


class UploadLimitHandler(FileUploadHandler):
    """The first of ``FILE_UPLOAD_HANDLERS``: a multipart body past the upload limit is refused (413).

    Before anything is read when its ``Content-Length`` is over the limit plus
    :data:`MULTIPART_ENVELOPE`; otherwise the moment the file bytes received, all files of
    the request together, pass the limit. The chunk that passes it reaches no other handler.
    """

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        refuse_declared_over_limit(META, allowance=MULTIPART_ENVELOPE)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        limit = settings.MRIANNOT_MAX_UPLOAD_BYTES
        if self.received > limit:
            raise _over_limit(limit)
        return raw_data

    def file_complete(self, file_size):
        return None
