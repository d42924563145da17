"""Files on storage, written whole or not at all, and the sweep that removes what no row names.

:func:`file_write` writes under a temporary name next to the final one (``<name>.tmp-<hex>``),
reads it back and checks its size and sha256, then moves it into place with ``os.replace``,
so a reader sees the old file or the new one, never part of one. On any other storage (an S3
bucket, which publishes an object whole or not at all) the file is uploaded at its final name,
read back, and removed again if it is not the bytes that were sent. A content-addressed file
that is already there is reused only if it holds exactly those bytes.

:func:`files_cleanup` (``manage.py files_cleanup``, run by the launcher at start) removes
temporary files, files under the data folders that no row's file field names, and Django's
upload leftovers, once they are older than a grace period.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.db import models

from .errors import StorageUnavailable

TEMP_MARK = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-[0-9a-f]{32}$")
#: Top folders of the storage that hold the apps' files (see docs/architecture.md, "Files on storage").
DATA_FOLDERS = ("scans", "annotations", "consensus", "groundtruth", "models", "prelabels", "exports")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Stored:
    """Where :func:`file_write` put the bytes: ``created`` when nothing was at the name before,
    ``reused`` when an identical file was already there and nothing was written."""

    name: str
    created: bool
    reused: bool = False


def file_write(*, name: str, data: bytes, reuse: bool = False, storage: Storage | None = None) -> Stored:
    """Store ``data`` at exactly ``name``, replacing what is there, verified; see the module docstring.

    With ``reuse=True`` (content-addressed names) an existing file with the same size and
    sha256 is kept as it is; one that differs (truncated by a crash, say) is replaced.
    """
    storage = storage or default_storage
    digest = hashlib.sha256(data).hexdigest()
    path = storage.path(name) if isinstance(storage, FileSystemStorage) else None
    existed = storage.exists(name)
    if existed and reuse and _holds(storage, name, len(data), digest):
        if path is not None:
            try:
                os.utime(path)  # in use again: the cleanup's grace period starts over
            except OSError:
                pass
        return Stored(name=name, created=False, reused=True)
    if path is not None:
        _write_local(path, data, digest, storage)
        return Stored(name=name, created=not existed)
    if existed:
        storage.delete(name)
    saved = storage.save(name, ContentFile(data))
    if saved != name:  # another writer took the name in between
        storage.delete(saved)
        if reuse and _holds(storage, name, len(data), digest):
            return Stored(name=name, created=False, reused=True)
        raise StorageUnavailable(f"{name} is being written by another request", reason="busy", retry_after_s=5)
    if not _holds(storage, name, len(data), digest):
        storage.delete(name)
        raise StorageUnavailable(f"{name} did not read back intact", reason="not_intact")
    return Stored(name=name, created=not existed)


def file_delete(*, name: str, storage: Storage | None = None) -> None:
    """Remove a file this request wrote, if the storage lets us; a failure to do so is left to the cleanup."""
    try:
        (storage or default_storage).delete(name)
    except OSError:
        pass


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _holds(storage: Storage, name: str, size: int, digest: str) -> bool:
    """True when the file at ``name`` has exactly this size and sha256."""
    try:
        if storage.size(name) != size:
            return False
        with storage.open(name, "rb") as handle:
            return _sha256(handle) == digest
    except FileNotFoundError:
        return False


def _write_local(path: str, data: bytes, digest: str, storage: Storage) -> None:
    directory = os.path.dirname(path)
    mode = getattr(storage, "directory_permissions_mode", None)
    os.makedirs(directory, **({"mode": mode} if mode is not None else {}), exist_ok=True)
    temp = f"{path}{TEMP_MARK}{uuid.uuid4().hex}"
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with open(temp, "rb") as handle:
            intact = os.fstat(handle.fileno()).st_size == len(data) and _sha256(handle) == digest
        if not intact:
            raise StorageUnavailable(f"{os.path.basename(path)} did not read back intact", reason="not_intact")
        if getattr(storage, "file_permissions_mode", None) is not None:
            os.chmod(temp, storage.file_permissions_mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - a file system that cannot sync a folder
        pass


# --- the sweep --------------------------------------------------------------------------------------


@dataclass
class CleanupReport:
    """What :func:`files_cleanup` removed (or would remove), per kind: ``temporary``, ``upload leftover``
    (Django's spooled uploads) and ``orphaned <folder>`` for each data folder."""

    dry_run: bool
    removed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: list[str] = field(default_factory=list)


def referenced_files() -> set[str]:
    """Every file name that a row's file field holds, over every installed model."""
    names: set[str] = set()
    for model in apps.get_models():
        for column in (f.name for f in model._meta.concrete_fields if isinstance(f, models.FileField)):
            names.update(model._default_manager.exclude(**{column: ""}).values_list(column, flat=True))
    names.discard(None)
    return names


def _walk(storage: Storage, folder: str):
    try:
        directories, files = storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{folder}/{name}" if folder else name
    for directory in directories:
        yield from _walk(storage, f"{folder}/{directory}" if folder else directory)


def files_cleanup(
    *, older_than_s: float = 3600.0, dry_run: bool = False, storage: Storage | None = None
) -> CleanupReport:
    """Remove temporary and orphaned files and upload leftovers older than ``older_than_s``.

    A file that a row names is never removed, however old; a young file is left alone (its row
    may not be committed yet). Files outside :data:`DATA_FOLDERS` are not ours and stay.
    """
    storage = storage or default_storage
    report = CleanupReport(dry_run=dry_run)
    cutoff = time.time() - older_than_s
    candidates = []
    for name in _walk(storage, ""):
        top = name.split("/", 1)[0]
        if _TEMP_NAME.search(name):
            candidates.append(("temporary", name))
        elif top in DATA_FOLDERS and "/" in name:
            candidates.append((f"orphaned {top}", name))
    referenced = referenced_files()  # read after the listing: a row committed meanwhile is seen
    for kind, name in candidates:
        if name in referenced:
            continue
        try:
            if storage.get_modified_time(name).timestamp() > cutoff:
                continue
            size = storage.size(name)
            if not dry_run:
                storage.delete(name)
        except FileNotFoundError:
            continue
        except OSError:
            report.failed.append(name)
            continue
        report.removed[kind].append(name)
        report.bytes[kind] += size

    upload_dir = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    if upload_dir and Path(upload_dir).is_dir():
        for path in Path(upload_dir).iterdir():
            try:
                stat = path.stat()
                if not path.is_file() or ".upload" not in path.name or stat.st_mtime > cutoff:
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                report.failed.append(str(path))
                continue
            report.removed["upload leftover"].append(str(path))
            report.bytes["upload leftover"] += stat.st_size
    return report
