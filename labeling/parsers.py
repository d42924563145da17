"""Request parsers: NIfTI bytes as the raw request body."""

from django.conf import settings
from rest_framework.parsers import BaseParser

from mriannot.errors import TooLarge


class NiftiParser(BaseParser):
    """Takes the body as bytes: ``application/octet-stream``, ``application/gzip`` or ``application/x-nifti``."""

    media_type = "application/octet-stream"
    media_types = ("application/octet-stream", "application/gzip", "application/x-gzip", "application/x-nifti")

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        limit = settings.MRIANNOT_MAX_UPLOAD_BYTES
        if stream is None:
            return b""
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"The upload is larger than {limit} bytes (MRIANNOT_MAX_UPLOAD_BYTES).")
        return data


class GzipParser(NiftiParser):
    media_type = "application/gzip"


class XGzipParser(NiftiParser):
    media_type = "application/x-gzip"


class XNiftiParser(NiftiParser):
    media_type = "application/x-nifti"


NIFTI_PARSERS = [NiftiParser, GzipParser, XGzipParser, XNiftiParser]
