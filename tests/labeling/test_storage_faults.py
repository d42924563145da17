"""Never serve a corrupt file; a full disk, a read-only folder or a locked database answers 503.

- a truncated file at a scan's content-addressed name is replaced on the next upload, not reused;
- a write refused by the disk (ENOSPC, EDQUOT, EROFS, EACCES) during a scan upload or a
  revision save answers 503 with ``Retry-After``, and leaves no row and no file;
- a database held by another writer answers 503 after the lock timeout, not after half a minute;
- ``manage.py files_cleanup`` removes old temporary and orphaned files and upload leftovers,
  keeps every file a row names and every young file, and says what it removed.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import sqlite3
import time

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import OperationalError, connection

from consensus.models import Export
from labeling import services, volumes
from labeling.models import AnnotationRevision, Assignment, AuditEvent, Scan
from mriannot import storage
from tests import factories

pytestmark = pytest.mark.django_db

OCTET = "application/octet-stream"


def _upload(world, raw: bytes):
    upload = io.BytesIO(raw)
    upload.name = "scan.nii.gz"
    return world.client(world.lead).post(
        f"/api/v1/projects/{world.project.pk}/scans/", {"file": upload}, format="multipart"
    )


def _scan_bytes(seed=0) -> bytes:
    return factories.nifti_bytes(factories.image_array(seed=seed), factories.AFFINE)


def _refuse_writes(monkeypatch, code: int):
    """Every file the storage opens for writing fails as a full or read-only disk would."""

    def fake_open(path, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise OSError(code, os.strerror(code), path)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(storage, "open", fake_open, raising=False)


def _assert_503(response, reason: str):
    assert response.status_code == 503, response.content
    body = json.loads(response.content)
    assert body["error"] == "storage_unavailable"
    assert body["reason"] == reason
    assert "Nothing was saved" in body["detail"]
    assert int(response["Retry-After"]) > 0


# --- never serve a corrupt file ------------------------------------------------------------------


def test_a_truncated_scan_file_is_not_reused_by_the_next_upload(world, _media_root, stored_files):
    raw = _scan_bytes()
    good = volumes.load_image(raw, max_decompressed_bytes=django_settings.MRIANNOT_MAX_DECOMPRESSED_BYTES).nifti_bytes
    name = f"scans/{hashlib.sha256(raw).hexdigest()}.nii.gz"
    (_media_root / "scans").mkdir()
    (_media_root / name).write_bytes(good[: len(good) // 2])  # a crash cut an earlier write short

    response = _upload(world, raw)

    assert response.status_code == 201, response.json()
    assert Scan.objects.get().image.name == name
    assert hashlib.sha256((_media_root / name).read_bytes()).hexdigest() == hashlib.sha256(good).hexdigest()
    assert stored_files() == [name]


def test_a_reused_scan_file_stays_when_the_second_upload_fails(world, _media_root, monkeypatch):
    first = factories.add_scan(world)
    other = services.project_create(actor=world.lead, name="Other project", labels=factories.LABELS)

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "audit_log", locked)
    with pytest.raises(OperationalError):
        services.scan_create(project=other, actor=world.lead, raw=_scan_bytes())
    assert (_media_root / first.image.name).is_file()


# --- 503 when the disk or the database cannot take the write ---------------------------------------


FAULTS = {
    "disk full": (errno.ENOSPC, "disk_full"),
    "quota exceeded": (errno.EDQUOT, "disk_full"),
    "read-only file system": (errno.EROFS, "read_only"),
    "folder not writable": (errno.EACCES, "read_only"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_scan_upload_the_disk_refuses_answers_503_and_stores_nothing(world, stored_files, monkeypatch, fault):
    code, reason = FAULTS[fault]
    _refuse_writes(monkeypatch, code)
    response = _upload(world, _scan_bytes())
    _assert_503(response, reason)
    assert not Scan.objects.exists()
    assert not AuditEvent.objects.filter(action="scan.upload").exists()
    assert stored_files() == []


@pytest.mark.parametrize("fault", ["disk full", "read-only file system"])
def test_a_revision_save_the_disk_refuses_answers_503_and_stores_nothing(world, stored_files, monkeypatch, fault):
    code, reason = FAULTS[fault]
    scan = factories.add_scan(world)
    assignment = Assignment.objects.filter(scan=scan).order_by("id").first()
    before = stored_files()
    _refuse_writes(monkeypatch, code)
    response = world.client(assignment.annotator).post(
        f"/api/v1/assignments/{assignment.pk}/revisions/?base_revision=none",
        factories.nifti_bytes(factories.label_array(), factories.AFFINE),
        content_type=OCTET,
    )
    _assert_503(response, reason)
    assert not AnnotationRevision.objects.exists()
    assert stored_files() == before


def test_a_database_error_after_the_file_was_written_answers_503_and_removes_the_file(world, stored_files, monkeypatch):
    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "audit_log", locked)
    response = _upload(world, _scan_bytes())
    _assert_503(response, "database_busy")
    assert not Scan.objects.exists()
    assert stored_files() == []


@pytest.mark.django_db(transaction=True)
def test_a_save_waiting_on_a_database_lock_answers_503(world, stored_files):
    """Another connection holds SQLite's write lock; the upload gives up after the lock timeout."""
    options = connection.settings_dict["OPTIONS"]
    saved_timeout = options["timeout"]
    connection.close()
    options["timeout"] = 0.2  # MRIANNOT_DB_LOCK_TIMEOUT_S, short for the test
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        response = _upload(world, _scan_bytes())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        options["timeout"] = saved_timeout
        connection.close()
    _assert_503(response, "database_busy")
    assert not Scan.objects.exists()
    assert stored_files() == []


def test_a_page_outside_the_api_answers_the_same_503(client, monkeypatch):
    from frontend import views

    def locked(request, name):
        raise OperationalError("database is locked")

    monkeypatch.setattr(views, "_page", locked)
    _assert_503(client.get("/login/"), "database_busy")


def test_a_fault_outside_any_view_answers_the_same_503(rf):
    """Django's 500 handler runs inside its ``except`` (e.g. the session saved by its middleware
    after the view): a storage fault there is the same 503, anything else still a 500."""
    from mriannot.urls import server_error

    try:
        raise OperationalError("database is locked")
    except OperationalError:
        response = server_error(rf.get("/"))
    _assert_503(response, "database_busy")
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        assert server_error(rf.get("/")).status_code == 500


# --- manage.py files_cleanup ---------------------------------------------------------------------------


HOUR = 3600


def _put(root, name: str, data: bytes = b"x" * 100, age_s: float = 0.0):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


@pytest.fixture
def cluttered(world, _media_root, tmp_path, settings):
    """Referenced files (all old), orphans and temporary files (old and young), upload leftovers."""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    uploads = tmp_path / "upload-tmp"
    uploads.mkdir()
    scan = factories.add_scan(world)
    assignment = Assignment.objects.filter(scan=scan).order_by("id").first()
    revision, _ = services.revision_create(
        assignment=assignment,
        actor=assignment.annotator,
        raw=factories.nifti_bytes(factories.label_array(), factories.AFFINE),
        base_revision_id=None,
    )
    export = Export.objects.create(project=world.project, format="nnunet", file="exports/1.zip")
    kept = [
        _put(_media_root, scan.image.name, (_media_root / scan.image.name).read_bytes(), age_s=2 * HOUR),
        _put(_media_root, revision.file.name, (_media_root / revision.file.name).read_bytes(), age_s=2 * HOUR),
        _put(_media_root, export.file.name, age_s=2 * HOUR),  # another app's file field
        _put(_media_root, "annotations/9/young.nii.gz"),  # its row may not be committed yet
        _put(_media_root, "scans/young.nii.gz.tmp-" + "a" * 32),  # a write in progress
        _put(_media_root, "README.txt", age_s=2 * HOUR),  # not in a data folder: not ours
        _put(uploads, "tmpyoung.upload.gz"),
        _put(uploads, "unrelated.txt", age_s=2 * HOUR),
    ]
    removed = {
        "orphaned scans": _put(_media_root, "scans/" + "0" * 64 + ".nii.gz", b"y" * 300, age_s=2 * HOUR),
        "orphaned consensus": _put(_media_root, "consensus/1/7/labels.nii.gz", age_s=2 * HOUR),
        "temporary": _put(_media_root, "annotations/1/abc.nii.gz.tmp-" + "b" * 32, b"z" * 50, age_s=2 * HOUR),
        "upload leftover": _put(uploads, "tmpold.upload.gz", b"u" * 70, age_s=2 * HOUR),
    }
    return kept, removed


def test_cleanup_dry_run_reports_and_removes_nothing(cluttered):
    kept, removed = cluttered
    report = storage.files_cleanup(older_than_s=HOUR, dry_run=True)
    assert {kind: len(names) for kind, names in report.removed.items()} == dict.fromkeys(removed, 1)
    assert all(path.exists() for path in kept + list(removed.values()))


def test_cleanup_removes_old_temporary_and_orphaned_files_and_keeps_the_rest(cluttered):
    kept, removed = cluttered
    out = io.StringIO()
    call_command("files_cleanup", "--older-than", str(HOUR), stdout=out)
    assert all(path.exists() for path in kept), [str(p) for p in kept if not p.exists()]
    assert not any(path.exists() for path in removed.values())
    text = out.getvalue()
    assert "Removed 1 orphaned scans file(s), 300 bytes" in text
    assert "Removed 1 orphaned consensus file(s), 100 bytes" in text
    assert "Removed 1 temporary file(s), 50 bytes" in text
    assert "Removed 1 upload leftover file(s), 70 bytes" in text
    again = io.StringIO()
    call_command("files_cleanup", stdout=again)
    assert "Nothing to remove" in again.getvalue()
