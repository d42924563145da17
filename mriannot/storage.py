"""Files on storage, written whole or not at all, and the sweep that removes what no row names.

:func:`file_write` writes under a temporary name next to the final one (``<name>.tmp-<hex>``),
reads it back and checks its size and sha256, then moves it into place with ``os.replace``,
so a reader sees the old file or the new one, never part of one. On any other storage (an S3
bucket, which publishes an object whole or not at all) the file is uploaded at its final name,
read back, and removed again if it is not the bytes that were sent. A content-addressed file
that is already there is reused only if it holds exactly those bytes.

:func:`file_write_from` does the same for a file too big to hold in memory (an export's zip):
it is copied from an open file or a path in chunks of 1 MiB, hashed on the way, and checked
against that hash when read back; at no point is the whole file in memory.

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from django.apps import apps
from django.conf import settings
from django.core.files.base import ContentFile, File
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
        _write_local(path, (data,), storage, digest=digest)
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


@dataclass(frozen=True)
class StoredFile:
    """Where :func:`file_write_from` put a file, with its size and sha256 (read on the way)."""

    name: str
    created: bool
    size: int
    sha256: str


def file_write_from(*, name: str, source: str | os.PathLike | BinaryIO, storage: Storage | None = None) -> StoredFile:
    """Store the file ``source`` (a path, or a seekable binary file open for reading; all of it is stored) at
    exactly ``name``, replacing what is there, verified, in chunks: memory stays at a chunk
    whatever the size. The guarantees of :func:`file_write` hold (a temporary name, fsync,
    read back against the sha256 of what was read from ``source``, ``os.replace``; on object
    storage an upload that does not read back is removed)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return file_write_from(name=name, source=handle, storage=storage)
    storage = storage or default_storage
    path = storage.path(name) if isinstance(storage, FileSystemStorage) else None
    existed = storage.exists(name)
    source.seek(0)
    if path is not None:
        size, digest = _write_local(path, iter(lambda: source.read(_CHUNK), b""), storage)
        return StoredFile(name=name, created=not existed, size=size, sha256=digest)
    size, digest = 0, hashlib.sha256()
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        digest.update(chunk)
    source.seek(0)  # File.chunks() reads from the start too
    _save_object(storage, name, File(source, name=os.path.basename(name)), size, digest.hexdigest(), existed)
    return StoredFile(name=name, created=not existed, size=size, sha256=digest.hexdigest())


def _save_object(storage: Storage, name: str, content: File, size: int, digest: str, existed: bool) -> None:
    """Upload ``content`` at exactly ``name`` on a storage without local paths, and check it reads back."""
    if existed:
        storage.delete(name)
    saved = storage.save(name, content)
    if saved != name:  # another writer took the name in between
        storage.delete(saved)
        raise StorageUnavailable(f"{name} is being written by another request", reason="busy", retry_after_s=5)
    if not _holds(storage, name, size, digest):
        storage.delete(name)
        raise StorageUnavailable(f"{name} did not read back intact", reason="not_intact")


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


def _write_local(path: str, chunks: Iterable[bytes], storage: Storage, *, digest: str | None = None) -> tuple[int, str]:
    """Write ``chunks`` under a temporary name beside ``path``, fsync, read back against the size and
    sha256 of the chunks (``digest`` when the caller knows it already), move into place. Returns
    (size, sha256)."""
    directory = os.path.dirname(path)
    mode = getattr(storage, "directory_permissions_mode", None)
    os.makedirs(directory, **({"mode": mode} if mode is not None else {}), exist_ok=True)
    temp = f"{path}{TEMP_MARK}{uuid.uuid4().hex}"
    hasher = hashlib.sha256() if digest is None else None
    size = 0
    try:
        with open(temp, "xb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        digest = digest if hasher is None else hasher.hexdigest()
        with open(temp, "rb") as handle:
            intact = os.fstat(handle.fileno()).st_size == size and _sha256(handle) == digest
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
    return size, digest


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
