"""Uploads that would cost the server memory the sender chooses, through the API.

The NIfTI door's own limits are tested in ``test_volumes.py``; here: a body refused from its
``Content-Length`` before it is read, a multipart file refused as it arrives (by the upload
handler in ``FILE_UPLOAD_HANDLERS``, whatever reads the body first), and the hostile files of
``bench/bench_hostile_uploads.py`` in small, refused with the right answer and nothing stored.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from django.core.files.uploadhandler import FileUploadHandler
from rest_framework.test import APIClient

from labeling import services, volumes
from labeling.models import AnnotationRevision, Assignment, Scan
from labeling.parsers import MULTIPART_ENVELOPE, READ_CHUNK, NiftiParser, UploadLimitHandler
from mriannot.errors import TooLarge
from tests import factories

pytestmark = pytest.mark.django_db

OCTET = "application/octet-stream"
BOUNDARY = "hostileboundary"


class _UnreadableBody:
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


@pytest.fixture
def assignment(world):
    scan = factories.add_scan(world)
    return Assignment.objects.filter(scan=scan).order_by("annotator_id").first()


def _revisions_url(assignment) -> str:
    return f"/api/v1/assignments/{assignment.pk}/revisions/?base_revision=none"


def _scans_url(world) -> str:
    return f"/api/v1/projects/{world.project.pk}/scans/"


def _multipart(content: bytes, name: str = "scan.nii.gz") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


# --- declared too large: refused before the body is read ------------------------------------------


def test_a_raw_body_whose_content_length_is_over_the_limit_is_refused_unread(world, assignment, settings):
    client = world.client(assignment.annotator)
    response = client.post(
        _revisions_url(assignment),
        b"x",  # replaced below: the test client would otherwise send a real body
        content_type=OCTET,
        CONTENT_LENGTH=str(settings.MRIANNOT_MAX_UPLOAD_BYTES + 1),
        **{"wsgi.input": _UnreadableBody()},
    )
    assert response.status_code == 413, response.json()
    body = response.json()
    assert body["error"] == "too_large"
    assert "Content-Length" in body["detail"] and "MRIANNOT_MAX_UPLOAD_BYTES" in body["detail"]
    assert not AnnotationRevision.objects.filter(assignment=assignment).exists()


def test_a_multipart_body_whose_content_length_is_over_the_limit_is_refused_unread(world, settings):
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 1 << 20
    response = world.client(world.lead).post(
        _scans_url(world),
        b"x",
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
        CONTENT_LENGTH=str((1 << 20) + MULTIPART_ENVELOPE + 1),
        **{"wsgi.input": _UnreadableBody()},
    )
    assert response.status_code == 413, response.json()
    assert "Content-Length" in response.json()["detail"]
    assert not Scan.objects.exists()


def test_the_envelope_allowance_leaves_room_for_a_file_of_exactly_the_limit(world, settings, stored_files):
    raw = factories.nifti_bytes(factories.image_array(), factories.AFFINE)
    settings.MRIANNOT_MAX_UPLOAD_BYTES = len(raw)
    upload = io.BytesIO(raw)
    upload.name = "scan.nii.gz"
    response = world.client(world.lead).post(_scans_url(world), {"file": upload}, format="multipart")
    assert response.status_code == 201, response.json()


# --- multipart: counted as it arrives ---------------------------------------------------------------


class _Recorder(FileUploadHandler):
    """Stands for the handlers that keep a file (memory, temporary file): what reached them."""

    seen = 0

    def receive_data_chunk(self, raw_data, start):
        type(self).seen += len(raw_data)
        return raw_data

    def file_complete(self, file_size):
        return None


def test_a_multipart_file_over_the_limit_is_refused_before_the_rest_reaches_the_file_handlers(world, settings):
    """The Content-Length is within limit + envelope, so only counting can refuse it: the chunk
    that passes the limit reaches no handler that keeps it (before: all of it was spooled, read
    into memory and only then refused)."""
    limit = 200_000
    settings.MRIANNOT_MAX_UPLOAD_BYTES = limit
    settings.FILE_UPLOAD_HANDLERS = ["labeling.parsers.UploadLimitHandler", f"{__name__}._Recorder"]
    _Recorder.seen = 0
    body = _multipart(bytes(limit + 50_000))
    assert len(body) <= limit + MULTIPART_ENVELOPE
    response = world.client(world.lead).post(
        _scans_url(world), body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert response.status_code == 413, response.json()
    assert "as it arrived" in response.json()["detail"]
    assert 0 < _Recorder.seen <= limit
    assert not Scan.objects.exists()


@pytest.mark.parametrize("session", [False, True], ids=["token", "session (CSRF check reads the body first)"])
def test_the_upload_limit_handler_is_the_first_handler_of_every_multipart_request(world, settings, session):
    """With the project's own FILE_UPLOAD_HANDLERS. A session request's CSRF check parses the
    multipart body (looking for csrfmiddlewaretoken) before DRF's parser: counted all the same."""
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 100_000
    body = _multipart(bytes(150_000))
    headers = {}
    if session:
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(world.lead)
        secret = "s3cr3t" * 5 + "ab"  # a well-formed CSRF secret, sent as cookie and header
        client.cookies["csrftoken"] = secret
        headers["X-CSRFToken"] = secret
    else:
        client = world.client(world.lead)
    response = client.post(
        _scans_url(world), body, content_type=f"multipart/form-data; boundary={BOUNDARY}", headers=headers
    )
    assert response.status_code == 413, response.content
    assert "as it arrived" in response.json()["detail"]


def test_the_handler_counts_every_file_of_a_request_together(settings):
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 100
    handler = UploadLimitHandler()
    handler.handle_raw_input(_UnreadableBody(), {"CONTENT_LENGTH": "500"}, 500, BOUNDARY)
    handler.new_file("file", "a.nii", "application/octet-stream", 60)
    assert handler.receive_data_chunk(b"a" * 60, 0) == b"a" * 60
    handler.new_file("file", "b.nii", "application/octet-stream", 60)
    with pytest.raises(TooLarge):
        handler.receive_data_chunk(b"b" * 60, 0)


# --- raw bodies: read a chunk at a time -------------------------------------------------------------


class _EndlessBody:
    """A body that never ends (as when a Content-Length cannot be trusted); counts what was read."""

    def __init__(self) -> None:
        self.served = 0

    def read(self, size=-1):
        assert 0 < size <= READ_CHUNK, f"asked for {size} bytes at once"
        self.served += size
        return bytes(size)


def test_the_nifti_parser_stops_reading_a_chunk_past_the_limit(settings):
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 3 * READ_CHUNK + 5
    body = _EndlessBody()
    with pytest.raises(TooLarge):
        NiftiParser().parse(body)
    assert body.served == 4 * READ_CHUNK


# --- the hostile files, small, through the API ------------------------------------------------------


def test_a_gzip_bomb_that_declares_2_gib_is_refused_with_413(world, stored_files):
    header = volumes.image_to_bytes(np.zeros((2, 2, 2), np.int16), np.eye(4))
    raw = bytearray(gzip.decompress(header)[:352])
    raw[42:48] = np.array([1024, 1024, 1024], "<i2").tobytes()  # dim[1..3]: 2 GiB of int16
    bomb = gzip.compress(bytes(raw) + bytes(4 << 20), compresslevel=9)
    upload = io.BytesIO(bomb)
    upload.name = "bomb.nii.gz"
    response = world.client(world.lead).post(_scans_url(world), {"file": upload}, format="multipart")
    assert response.status_code == 413, response.json()
    assert response.json()["error"] == "too_large" and "header declares" in response.json()["detail"]
    assert not Scan.objects.exists() and stored_files() == []


def test_a_scan_followed_by_zeros_is_refused_as_trailing_data(world, stored_files):
    raw = gzip.decompress(factories.nifti_bytes(factories.image_array(), factories.AFFINE))
    upload = io.BytesIO(gzip.compress(raw + bytes(8 << 20), compresslevel=9))
    upload.name = "scan.nii.gz"
    response = world.client(world.lead).post(_scans_url(world), {"file": upload}, format="multipart")
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "trailing_data"
    assert not Scan.objects.exists() and stored_files() == []


def test_a_label_map_with_a_second_member_of_data_is_refused(assignment, world, stored_files):
    scan = assignment.scan
    ours = volumes.label_map_to_bytes(factories.label_array(), scan.affine)
    before = stored_files()
    appended = ours + gzip.compress(np.random.default_rng(0).bytes(1 << 20))
    response = world.client(assignment.annotator).post(_revisions_url(assignment), appended, content_type=OCTET)
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "trailing_data"
    assert not AnnotationRevision.objects.filter(assignment=assignment).exists()
    assert stored_files() == before


def test_a_label_map_with_a_small_second_member_is_stored_as_one_canonical_volume(assignment, world):
    """A second member as long as the first's data fakes the size in the gzip trailer; a few
    bytes after the image are tolerated, but what is stored is the canonical volume alone."""
    scan = assignment.scan
    labels = factories.label_array()
    ours = volumes.label_map_to_bytes(labels, scan.affine)
    appended = ours + gzip.compress(b"\xff" * (352 + labels.size))
    assert appended[-4:] == ours[-4:]
    response = world.client(assignment.annotator).post(_revisions_url(assignment), appended, content_type=OCTET)
    assert response.status_code == 201, response.json()
    revision = AnnotationRevision.objects.get(pk=response.json()["id"])
    with revision.file.open("rb") as handle:
        stored = handle.read()
    assert stored == ours
    assert revision.sha256 == services.sha256_hex(ours)
