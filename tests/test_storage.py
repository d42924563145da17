"""Files written whole or not at all (mriannot/storage.py), which errors are storage faults
(mriannot/errors.py), and the database lock timeouts read from the environment.

A write is cut off by replacing the module's ``open`` with one whose handle writes half of the
bytes and then fails (or silently stops), as a full disk or a dying process would.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage
from django.db import IntegrityError, OperationalError

from mriannot import storage
from mriannot.errors import StorageUnavailable, ValidationFailed, storage_fault

DATA = bytes(range(256)) * 64  # 16 KiB
NAME = "scans/abc.nii.gz"


class _CutOffHandle:
    """A file handle that writes half of what it is given, then raises ``error`` (or nothing)."""

    def __init__(self, real, error: int | None):
        self.real, self.error = real, error

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return len(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def _cut_writes(monkeypatch, error: int | None):
    def fake_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        return _CutOffHandle(handle, error) if "x" in mode or "w" in mode else handle

    monkeypatch.setattr(storage, "open", fake_open, raising=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_is_written_whole_with_no_temporary_file_left(_media_root, stored_files):
    stored = storage.file_write(name=NAME, data=DATA)
    assert stored == storage.Stored(name=NAME, created=True)
    assert (_media_root / NAME).read_bytes() == DATA
    assert stored_files() == [NAME]


def test_a_truncated_content_addressed_file_is_replaced_not_reused(_media_root, stored_files):
    (_media_root / "scans").mkdir()
    (_media_root / NAME).write_bytes(DATA[: len(DATA) // 2])  # a crash cut the first write short
    stored = storage.file_write(name=NAME, data=DATA, reuse=True)
    assert not stored.reused and not stored.created
    assert _sha((_media_root / NAME).read_bytes()) == _sha(DATA)
    assert stored_files() == [NAME]


def test_a_same_size_file_with_other_bytes_is_replaced(_media_root):
    (_media_root / "scans").mkdir()
    (_media_root / NAME).write_bytes(bytes(len(DATA)))
    assert not storage.file_write(name=NAME, data=DATA, reuse=True).reused
    assert (_media_root / NAME).read_bytes() == DATA


def test_an_identical_file_is_reused_without_writing(_media_root, monkeypatch):
    storage.file_write(name=NAME, data=DATA)
    _cut_writes(monkeypatch, errno.ENOSPC)  # any write now would fail
    stored = storage.file_write(name=NAME, data=DATA, reuse=True)
    assert stored.reused and not stored.created
    assert (_media_root / NAME).read_bytes() == DATA


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_write_cut_off_midway_leaves_no_file_at_the_name_and_no_temporary_file(
    _media_root, stored_files, monkeypatch, code
):
    _cut_writes(monkeypatch, code)
    with pytest.raises(OSError) as caught:
        storage.file_write(name=NAME, data=DATA)
    assert caught.value.errno == code
    assert stored_files() == []


def test_a_write_cut_off_midway_keeps_the_previous_file_whole(_media_root, stored_files, monkeypatch):
    storage.file_write(name=NAME, data=b"previous attempt")
    _cut_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError):
        storage.file_write(name=NAME, data=DATA)
    assert (_media_root / NAME).read_bytes() == b"previous attempt"
    assert stored_files() == [NAME]


def test_a_silently_short_write_is_caught_by_the_read_back(stored_files, monkeypatch):
    _cut_writes(monkeypatch, None)
    with pytest.raises(StorageUnavailable) as caught:
        storage.file_write(name=NAME, data=DATA)
    assert caught.value.extra == {"reason": "not_intact"}
    assert stored_files() == []


# --- a storage without local paths (an S3 bucket) ---------------------------------------------------


class _TruncatingStorage(InMemoryStorage):
    """Stores all but the last 10 bytes of every file."""

    def _save(self, name, content):
        return super()._save(name, ContentFile(content.read()[:-10]))


def test_object_storage_replaces_a_truncated_content_addressed_file():
    bucket = InMemoryStorage()
    bucket.save(NAME, ContentFile(DATA[:100]))
    stored = storage.file_write(name=NAME, data=DATA, reuse=True, storage=bucket)
    assert stored == storage.Stored(name=NAME, created=False)
    with bucket.open(NAME, "rb") as handle:
        assert handle.read() == DATA
    assert storage.file_write(name=NAME, data=DATA, reuse=True, storage=bucket).reused


def test_object_storage_removes_an_upload_that_does_not_read_back():
    bucket = _TruncatingStorage()
    with pytest.raises(StorageUnavailable):
        storage.file_write(name=NAME, data=DATA, storage=bucket)
    assert not bucket.exists(NAME)


# --- a file too big for memory (an export's zip) ---------------------------------------------------

BIG = 32 * 1024 * 1024  # far bigger than the memory bound below (about 3 MiB is used: a few 1 MiB chunks)


def test_a_big_file_is_stored_from_disk_in_chunks_never_whole(_media_root, stored_files, tmp_path):
    import tracemalloc

    source = tmp_path / "export.zip"
    with open(source, "wb") as handle:
        for _ in range(BIG // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        stored = storage.file_write_from(name="exports/1.zip", source=source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held while storing a {BIG / 2**20:.0f} MiB file"
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert stored == storage.StoredFile(name="exports/1.zip", created=True, size=BIG, sha256=digest.hexdigest())
    assert (_media_root / "exports/1.zip").stat().st_size == BIG
    assert stored_files() == ["exports/1.zip"]


def test_a_file_stored_from_a_handle_replaces_the_previous_one_whole(_media_root, stored_files, tmp_path):
    storage.file_write(name=NAME, data=b"previous attempt")
    with open(tmp_path / "new", "w+b") as handle:
        handle.write(DATA)  # left at its end: the whole file is stored all the same
        stored = storage.file_write_from(name=NAME, source=handle)
    assert not stored.created and stored.size == len(DATA) and stored.sha256 == _sha(DATA)
    assert (_media_root / NAME).read_bytes() == DATA
    assert stored_files() == [NAME]


@pytest.mark.parametrize("code", [errno.ENOSPC, None])
def test_a_cut_off_copy_leaves_the_previous_file_and_no_temporary_file(
    _media_root, stored_files, monkeypatch, tmp_path, code
):
    storage.file_write(name=NAME, data=b"previous attempt")
    (tmp_path / "new").write_bytes(DATA)
    _cut_writes(monkeypatch, code)  # a full disk, or a write that silently stops half way
    with pytest.raises((OSError, StorageUnavailable)):
        storage.file_write_from(name=NAME, source=tmp_path / "new")
    assert (_media_root / NAME).read_bytes() == b"previous attempt"
    assert stored_files() == [NAME]


def test_object_storage_takes_a_file_in_chunks_and_removes_one_that_does_not_read_back(tmp_path):
    (tmp_path / "new").write_bytes(DATA)
    bucket = InMemoryStorage()
    bucket.save(NAME, ContentFile(b"previous attempt"))
    stored = storage.file_write_from(name=NAME, source=tmp_path / "new", storage=bucket)
    assert stored == storage.StoredFile(name=NAME, created=False, size=len(DATA), sha256=_sha(DATA))
    with bucket.open(NAME, "rb") as handle:
        assert handle.read() == DATA
    truncating = _TruncatingStorage()
    with pytest.raises(StorageUnavailable):
        storage.file_write_from(name=NAME, source=tmp_path / "new", storage=truncating)
    assert not truncating.exists(NAME)


# --- which errors are storage faults -------------------------------------------------------------


class _PgError(Exception):
    def __init__(self, sqlstate):
        super().__init__("canceling statement")
        self.sqlstate = sqlstate


def _wrapped_pg(sqlstate):
    try:
        raise OperationalError("canceling statement") from _PgError(sqlstate)
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize(
    "exc, reason",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only"),
        (PermissionError(errno.EACCES, "Permission denied"), "read_only"),
        (OperationalError("database is locked"), "database_busy"),
        (OperationalError("database or disk is full"), "disk_full"),
        (OperationalError("attempt to write a readonly database"), "read_only"),
        (_wrapped_pg("55P03"), "database_busy"),  # lock_timeout
        (_wrapped_pg("57014"), "database_busy"),  # statement_timeout
    ],
)
def test_storage_faults_are_recognised(exc, reason):
    fault = storage_fault(exc)
    assert fault is not None and fault.status_code == 503
    assert fault.extra == {"reason": reason}
    assert "Nothing was saved" in fault.message and fault.retry_after_s > 0


def _refusal_while_handling_a_full_disk():
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        return ValidationFailed("a refusal of the service's own")


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file"),
        OperationalError("no such table: labeling_scan"),
        IntegrityError("UNIQUE constraint failed"),
        ValueError("bad value"),
        _refusal_while_handling_a_full_disk(),
    ],
)
def test_other_errors_are_not_storage_faults(exc):
    assert storage_fault(exc) is None


def test_a_fault_raised_from_another_error_is_found_through_its_cause():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not write the consensus") from exc
    except RuntimeError as exc:
        assert storage_fault(exc).extra == {"reason": "disk_full"}


# --- database lock timeouts from the environment --------------------------------------------------


def _database_options(tmp_path, **env) -> dict:
    script = "import json; from mriannot import settings; print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    environment = {**os.environ, "MRIANNOT_DATA_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "x" * 50}
    for name in ("DATABASE_URL", "MRIANNOT_DB_LOCK_TIMEOUT_S", "MRIANNOT_DB_STATEMENT_TIMEOUT_S"):
        environment.pop(name, None)
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_sqlite_waits_seconds_not_half_a_minute_for_a_lock(tmp_path):
    assert _database_options(tmp_path)["timeout"] == 5
    assert _database_options(tmp_path, MRIANNOT_DB_LOCK_TIMEOUT_S="0.5")["timeout"] == 0.5


def test_postgresql_gets_a_lock_timeout_and_a_statement_timeout(tmp_path):
    options = _database_options(
        tmp_path, DATABASE_URL="postgres://u:p@db.example.org:5432/mriannot", MRIANNOT_DB_LOCK_TIMEOUT_S="2"
    )
    assert "-c lock_timeout=2000" in options["options"]
    assert "-c statement_timeout=300000" in options["options"]
