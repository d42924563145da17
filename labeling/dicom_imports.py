"""DICOM study import as one background job: spool, analyse, review, create (``docs/dicom.md``).

The uploaded zip holds PHI, so it never enters storage: :func:`dicom_import_request` streams it
to a private file in the spool folder (``MRIANNOT_DICOM_SPOOL_DIR``, by default Django's
``FILE_UPLOAD_TEMP_DIR`` under the data folder; mode 0600, a neutral name ending ``.upload``,
which ``manage.py files_cleanup`` removes when a killed process left it), checks the zip's
directory, and creates a :class:`~labeling.models.DicomImport` whose task a worker runs.

1. Analysis (:func:`_analyse`): the zip is read twice, one file at a time: first its headers, to
   group the files by series (nothing kept but counts), then series by series to check,
   de-identify and convert each (:mod:`labeling.dicom`; a series is converted and staged on a
   second thread while the next one is read: at most two series in memory). Per series only
   de-identified results are kept: the NIfTI and the zip of de-identified slices under
   ``dicom-imports/<id>/`` in storage, and a row of numbers (series number, slices, TR/TE/TI,
   shape, spacing, role, status or refusal; the subject's and session's keyed pseudonyms),
   never a header's text. The spooled upload is removed when the analysis ends, whether it
   succeeded or failed. Progress: "series 3 of 7".
2. Review: the job is done as far as the job lifecycle goes (``status`` done, ``phase``
   review): a lead corrects roles (:func:`dicom_import_roles_set`) and confirms
   (:func:`dicom_import_confirm`), or discards it (:func:`dicom_import_discard`).
   ``auto_confirm`` skips the wait.
3. Creation (:func:`_create`, the same job queued again): the plan
   (:func:`labeling.dicom.import_plan`) says which series become a scan and which a further
   channel of one (projects that declare channels: one scan per session); each scan goes
   through :func:`~labeling.services.scan_create`, each channel through
   :func:`~labeling.services.scan_channel_add` (resampled onto the scan's grid when needed),
   with its zip of de-identified slices. The staged files are removed at the end.

Nothing read from the headers but the role, the field strength, the numbers above and the
pseudonyms is stored, logged or answered; member names are never echoed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
import zipfile
import zlib
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import transaction
from django.utils import timezone

from mriannot.errors import Conflict, ServiceError, ValidationFailed, storage_fault
from mriannot.jobs import JobStatus, job_execute, job_progress
from mriannot.queue import enqueue_on_commit
from mriannot.refusals import InputRefused
from mriannot.storage import file_delete, file_write

from . import archives, dicom
from . import metadata as scan_metadata
from .models import DicomImport, DicomImportPhase, Project, Scan, Split
from .services import audit_log, scan_channel_add, scan_create, sha256_hex
from .tasks import dicom_import_execute_task

log = logging.getLogger(__name__)

#: Storage folder of the de-identified results waiting for review, one folder per import.
STAGING = "dicom-imports"
#: What an import's files look like in the spool folder (``files_cleanup`` removes ``*.upload*``).
SPOOL_PREFIX, SPOOL_SUFFIX = "dicom-", ".upload"
_CHUNK = 1024 * 1024
#: Outcomes of a series once the scans are created (``ready`` and ``refused`` before).
OUTCOMES = ("stored", "duplicate", "refused", "superseded", "not_declared", "no_reference")
#: What the audit event keeps of each series' result.
AUDITED_RESULT_KEYS = ("series", "series_number", "role", "status", "error", "scan")
#: Fields of a series row that stay on the server (staged file names).
_PRIVATE_KEYS = ("nifti", "dicom_zip")


class ImportFailed(ValidationFailed):
    """The study as a whole cannot be imported (not retried): a code and a message without PHI."""


def max_files() -> int:
    """The most files (zip entries) a study may hold: ``MRIANNOT_MAX_DICOM_FILES`` (20,000)."""
    return int(getattr(settings, "MRIANNOT_MAX_DICOM_FILES", 20_000))


# --- the spooled upload --------------------------------------------------------------------------


def spool_dir() -> Path:
    """The private folder where uploaded studies wait for their analysis (made 0700 when missing)."""
    folder = Path(getattr(settings, "MRIANNOT_DICOM_SPOOL_DIR", "") or settings.FILE_UPLOAD_TEMP_DIR)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def spool_path(name: str) -> Path:
    if not (name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX) and "/" not in name and ".." not in name):
        raise ValueError("not a spooled DICOM upload")
    return spool_dir() / name


def upload_spool(source) -> tuple[str, int]:
    """Put an upload into a new private spool file; its name and size.

    ``source``: a path, a Django upload (spooled to disk by Django: linked, not copied), or a
    readable binary file (copied in 1 MiB pieces, never held whole).
    """
    name = f"{SPOOL_PREFIX}{secrets.token_hex(16)}{SPOOL_SUFFIX}"
    path = spool_dir() / name
    try:
        temporary = getattr(source, "temporary_file_path", None)
        if temporary is not None:
            try:
                os.link(temporary(), path)  # Django removes its own name after the request
                os.chmod(path, 0o600)
                return name, path.stat().st_size
            except OSError:
                pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, str | Path):
                with open(source, "rb") as handle:
                    shutil.copyfileobj(handle, out, _CHUNK)
            else:
                handle = getattr(source, "file", source)
                handle.seek(0)
                shutil.copyfileobj(handle, out, _CHUNK)
        return name, path.stat().st_size
    except BaseException:
        spool_remove(name)
        raise


def spool_remove(name: str) -> None:
    """Remove a spooled upload (nothing when it is gone already)."""
    if not name:
        return
    try:
        spool_path(name).unlink(missing_ok=True)
    except (OSError, ValueError):
        log.warning("a spooled DICOM upload could not be removed; files_cleanup will")


#: The archive's refusals, in words that never quote a member name (a path may name the patient).
_ARCHIVE_MESSAGES = {
    "not_a_zip": "This is not a readable .zip archive. Zip the study's DICOM files (any folder layout).",
    "too_many_members": "The archive holds more files than accepted ({limit}); split the study into smaller "
    "archives (by series).",
    "unsafe_path": "The archive holds an absolute path, a '..' component, a backslash or a link; nothing was "
    "read. Zip the study's folder itself.",
    "encrypted": "A file of the archive is encrypted; upload an archive without a password.",
    "too_large": "The archive, or a file in it, is larger than accepted; split the study into smaller archives.",
    "zip_bomb": "A file of the archive inflates more than {ratio} times its compressed size: refused as a zip bomb.",
}


def _archive_open(handle) -> archives.Archive:
    try:
        return archives.open_archive(
            handle,
            max_members=max_files(),
            max_member_bytes=settings.MRIANNOT_MAX_UPLOAD_BYTES,
            max_total_bytes=settings.MRIANNOT_MAX_ARCHIVE_BYTES,
            suffixes=None,
        )
    except archives.ArchiveError as error:
        message = _ARCHIVE_MESSAGES.get(error.code, "The archive cannot be read.")
        raise archives.ArchiveError(error.code, message.format(limit=max_files(), ratio=archives.MAX_RATIO)) from None


# --- request --------------------------------------------------------------------------------------


def dicom_import_request(
    *,
    project: Project,
    actor,
    upload,
    split: str = Split.UNASSIGNED,
    auto_confirm: bool = False,
    queue: bool = True,
) -> DicomImport:
    """Spool a zipped study, check its directory, and queue its import (unless ``queue`` is False:
    the command runs it in its own process). Refuses a file that is not a safe zip (400, nothing
    kept); everything else is the job's."""
    if split not in Split.values:
        raise ValidationFailed(f"Unknown split {split!r}; use one of {Split.values}.", code="invalid")
    name, size = upload_spool(upload)
    try:
        with open(spool_path(name), "rb") as handle:
            _archive_open(handle).zip.close()
        with transaction.atomic():
            job = DicomImport.objects.create(
                project=project,
                requested_by=actor if actor is not None and actor.is_authenticated else None,
                split=split,
                auto_confirm=auto_confirm,
                upload_name=name,
                upload_size=size,
                message="waiting for a worker",
            )
            audit_log(
                actor=actor,
                project=project,
                action="dicom_import.request",
                target=job,
                data={"bytes": size, "split": split, "auto_confirm": auto_confirm},
            )
            if queue:
                enqueue_on_commit(dicom_import_execute_task, job.pk)
    except BaseException:
        spool_remove(name)
        raise
    return job


def dicom_study_import(
    *, project: Project, actor, archive, split: str = Split.UNASSIGNED, review: bool = False
) -> DicomImport:
    """The whole import in this process (the command, the bench): request, analyse, and, unless
    ``review``, create the scans. Returns the job (see :func:`dicom_import_report`)."""
    job = dicom_import_request(
        project=project, actor=actor, upload=archive, split=split, auto_confirm=not review, queue=False
    )
    return dicom_import_execute(import_id=job.pk)


def dicom_import_execute(*, import_id: int) -> DicomImport:
    """Run the job's phase: analysis (then creation when ``auto_confirm``), or creation after a
    confirmation. Safe to run twice: an import waiting for review or finished is returned as it is."""
    return job_execute(DicomImport, import_id, _run, select_related=("project",))


def _run(job: DicomImport) -> DicomImport:
    if job.error_code:
        DicomImport.objects.filter(pk=job.pk).update(error_code="")
        job.error_code = ""
    if job.phase == DicomImportPhase.ANALYSE:
        job = _analyse(job)
        if job.phase == DicomImportPhase.REVIEW:
            return job
    if job.phase == DicomImportPhase.CREATE:
        return _create(job)
    return job  # discarded while it waited: nothing to do


def _fail(job: DicomImport, code: str, message: str) -> ImportFailed:
    DicomImport.objects.filter(pk=job.pk).update(error_code=code[:32])
    return ImportFailed(message, code=code)


# --- analysis -------------------------------------------------------------------------------------


class _Clock:
    """Seconds per step, summed over the series (two threads may add at once: the sum of the
    steps may exceed the wall clock)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def _analyse(job: DicomImport) -> DicomImport:
    name = job.upload_name
    try:
        path = spool_path(name) if name else None
    except ValueError:
        path = None
    if path is None or not path.exists():
        raise _fail(
            job,
            "upload_gone",
            "The uploaded study is no longer on the server (it waited too long, or the server was restarted "
            "before it was read); nothing was kept. Upload it again.",
        )
    DicomImport.objects.filter(pk=job.pk).update(series=[], files=0, ignored_files=0, summary={}, timings={})
    try:
        os.utime(path)  # in use: the cleanup's grace period starts over
        with dicom.quiet():  # pydicom quotes invalid header values in its warnings
            return _analyse_archive(job, path)
    except ImportFailed:
        _staging_remove(job.pk)
        raise
    except (ServiceError, InputRefused) as error:  # their messages are this module's or neutral
        _staging_remove(job.pk)
        raise _fail(job, error.code, error.message) from None
    except Exception as error:  # noqa: BLE001 - said without its text: it may quote a header
        _staging_remove(job.pk)
        log.warning("DICOM import %s: the analysis stopped (%s)", job.pk, type(error).__name__)
        raise _fail(
            job,
            "analysis_failed",
            f"The analysis stopped ({type(error).__name__}); nothing was kept. Upload the study again; if it "
            "fails again, tell an admin.",
        ) from None
    finally:
        spool_remove(name)
        DicomImport.objects.filter(pk=job.pk).update(upload_name="")


def _member_raw(opened: archives.Archive, member: archives.Member) -> bytes | None:
    try:
        return opened.read(member)
    except InputRefused:  # its message names the member: never shown
        return None


def _member_header(opened: archives.Archive, member: archives.Member):
    """The member's DICOM header (up to its pixels, nothing more inflated), None when it is not a
    DICOM image, False when it cannot be read from the zip."""
    try:
        with opened.zip.open(member.info) as stream:
            return dicom.header_read(stream)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError):
        return False


def _too_large(index: int, slices: int, declared: int) -> dict:
    limit = settings.MRIANNOT_MAX_DECOMPRESSED_BYTES
    return {
        "index": index,
        "slices": slices,
        "status": "refused",
        "error": "too_large",
        "detail": f"the series' files hold {declared} bytes; one series may hold at most {limit}",
    }


def _analyse_archive(job: DicomImport, path: Path) -> DicomImport:
    """Group the files by series (headers only), then each series: read, checked and de-identified
    here while the one before is converted and staged on a second thread (dcm2niix, zlib and file
    writes leave the interpreter free): at most two series in memory."""
    clock = _Clock()
    span = 0.8 if job.auto_confirm else 1.0  # creation takes the rest of the bar
    with open(path, "rb") as handle:
        opened = _archive_open(handle)
        members = opened.members
        groups: dict[str, list[int]] = {}
        ignored = damaged = 0
        with clock.step("read"):
            for n, member in enumerate(members):
                if n % 50 == 0:
                    job_progress(
                        DicomImport,
                        job.pk,
                        span * 0.1 * n / max(len(members), 1),
                        f"reading file {n + 1} of {len(members)}",
                    )
                header = _member_header(opened, member)
                if not header:
                    ignored += header is None
                    damaged += header is False
                    continue
                groups.setdefault(str(header.SeriesInstanceUID), []).append(n)
        if not groups:
            raise _fail(
                job, "no_dicom", "The archive holds no DICOM image; zip the study's DICOM files (any folder layout)."
            )
        secret = bytes.fromhex(job.project.deid_secret)
        record = dicom.DeidRecord()
        rows: list[dict] = []
        pending: tuple[dict, Future] | None = None

        def finish(row: dict, future: Future) -> None:
            row.update(future.result())
            if row["status"] == "ready":
                digest = row.pop("nifti_sha256")
                row["duplicate_of"] = (
                    Scan.objects.filter(project=job.project, sha256=digest).values_list("pk", flat=True).first()
                )
            DicomImport.objects.filter(pk=job.pk).update(series=rows)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-convert") as pool:
            for index, indexes in enumerate(groups.values(), start=1):
                job_progress(
                    DicomImport,
                    job.pk,
                    span * (0.1 + 0.9 * (index - 1) / len(groups)),
                    f"series {index} of {len(groups)}",
                )
                declared = sum(members[i].size for i in indexes)
                if declared > settings.MRIANNOT_MAX_DECOMPRESSED_BYTES:
                    rows.append(_too_large(index, len(indexes), declared))
                    continue
                with clock.step("read"):
                    series = [
                        ds for ds in (dicom.dataset_read(_member_raw(opened, members[i]) or b"") for i in indexes) if ds
                    ]
                row, prepared = _series_prepare(index, series, secret=secret, record=record, clock=clock)
                del series
                rows.append(row)
                if pending is not None:
                    finish(*pending)
                    pending = None
                if prepared is not None:
                    pending = (row, pool.submit(_series_stage, job.pk, index, *prepared, clock=clock))
                else:
                    DicomImport.objects.filter(pk=job.pk).update(series=rows)
            if pending is not None:
                finish(*pending)
        opened.zip.close()
    ready = sum(1 for r in rows if r["status"] == "ready")
    job.series = rows
    job.files = sum(len(v) for v in groups.values())
    job.ignored_files = ignored + damaged
    job.deidentification = record.as_dict()
    job.timings = clock.rounded()
    job.summary = {"series": len(rows), "ready": ready, "refused": len(rows) - ready, "damaged_files": damaged}
    with transaction.atomic():
        audit_log(
            actor=None,
            project=job.project,
            action="dicom_import.analyse",
            target=job,
            data={
                "files": job.files,
                "ignored_files": job.ignored_files,
                **job.summary,
                "results": [{k: r.get(k) for k in AUDITED_RESULT_KEYS if k != "scan"} for r in _audited(rows)],
                "deidentification": job.deidentification,
            },
        )
        if job.auto_confirm:
            job.phase = DicomImportPhase.CREATE
            job.confirmed_by = job.requested_by
            job.confirmed_at = timezone.now()
            job.message = f"{ready} of {len(rows)} series ready; creating the scans"
            job.save()
        else:
            job.phase = DicomImportPhase.REVIEW
            job.mark_done(f"{ready} of {len(rows)} series ready: check their roles and confirm")
            job.save()
    return job


def _audited(rows: list[dict]) -> list[dict]:
    return [{**r, "series": r["index"]} for r in rows]


def _series_prepare(
    index: int, series: list, *, secret: bytes, record: dicom.DeidRecord, clock: _Clock
) -> tuple[dict, tuple | None]:
    """One series checked and de-identified: its row (numbers, never text), and what
    :func:`_series_stage` converts (None when it is refused)."""
    if not series:
        row = {"index": index, "slices": 0, "status": "refused", "error": "damaged"}
        return {**row, "detail": "its files cannot be read"}, None
    role = dicom.series_role(series)
    row = {"index": index, **dicom.series_facts(series), "role_guess": role, "role": role, "status": "ready"}
    reason = dicom.series_check(series)
    if reason is not None:
        row.update(status="refused", error=reason, detail=dicom.reason_text(reason, series))
        return row, None
    first = series[0]
    patient = str(first.get("PatientID", "") or "")
    study = str(first.get("StudyInstanceUID", "") or "")
    subject = dicom.pseudonym(patient_id=patient, secret=secret)
    offset = dicom.date_offset_days(patient_id=patient, secret=secret)
    row.update(subject=subject, session=dicom.pseudonym(patient_id=study, secret=secret, prefix="ses-"))
    with clock.step("deidentify"):
        clean = [
            dicom.deidentify(ds, subject=subject, offset_days=offset, secret=secret, record=record) for ds in series
        ]
        encoded = dicom.series_encode(clean)
    return row, (clean, encoded)


def _series_stage(pk: int, index: int, clean: list, encoded: list[bytes], *, clock: _Clock) -> dict:
    """Convert a de-identified series and stage the NIfTI and the zip of its slices (no database:
    it runs on the converting thread); what its row gets."""
    try:
        with clock.step("convert"):
            converted = dicom.series_convert(clean, encoded=encoded, compresslevel=1)
    except dicom.DicomError as error:
        return {"status": "refused", "error": error.code, "detail": error.message}
    with clock.step("stage"):
        slices = dicom.series_zip(encoded)
        folder = f"{STAGING}/{pk}"
        nifti = file_write(name=f"{folder}/series-{index:03d}.nii.gz", data=converted.nifti).name
        zipped = file_write(name=f"{folder}/series-{index:03d}-dicom.zip", data=slices).name
    return {
        "shape": [int(n) for n in converted.shape[:3]],
        "spacing": [round(float(v), 4) for v in np.linalg.norm(converted.affine[:3, :3], axis=0)],
        "geometry_error_mm": round(converted.affine_error_mm, 4),
        "nifti": nifti,
        "dicom_zip": zipped,
        "nifti_sha256": sha256_hex(converted.nifti),
    }


# --- review ---------------------------------------------------------------------------------------


def _locked(job: DicomImport) -> DicomImport:
    return DicomImport.objects.select_for_update().select_related("project").get(pk=job.pk)


def _in_review(job: DicomImport) -> bool:
    return job.phase == DicomImportPhase.REVIEW and job.status == JobStatus.DONE


def _roles_apply(job: DicomImport, roles: dict) -> dict[int, list[str]]:
    """Set the roles of some series (``{index: role}``); the changes ``{index: [old, new]}``."""
    if not isinstance(roles, dict):
        raise ValidationFailed('roles: an object of series and roles, for example {"2": "FLAIR"}.', code="invalid")
    by_index = {row["index"]: row for row in job.series}
    changes: dict[int, list[str]] = {}
    for key, role in roles.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            index = None
        row = by_index.get(index)
        if row is None:
            raise ValidationFailed(f"roles: the import has no series {key}.", code="unknown_series")
        if role not in dicom.ROLES:
            raise ValidationFailed(f"roles: {role!r} is not one of {', '.join(dicom.ROLES)}.", code="invalid_role")
        if row["status"] != "ready":
            raise ValidationFailed(
                f"roles: series {index} was refused ({row.get('detail', '')}); it makes no scan.", code="series_refused"
            )
        if row["role"] != role:
            changes[index] = [row["role"], role]
            row["role"] = role
    return changes


@transaction.atomic
def dicom_import_roles_set(*, job: DicomImport, actor, roles: dict) -> DicomImport:
    """Correct the roles of some series while the import waits for review (409 otherwise)."""
    job = _locked(job)
    if not _in_review(job):
        raise Conflict(_not_in_review(job), code="not_in_review")
    changes = _roles_apply(job, roles)
    if changes:
        job.save(update_fields=["series"])
        audit_log(actor=actor, project=job.project, action="dicom_import.roles", target=job, data={"changes": changes})
    return job


def _not_in_review(job: DicomImport) -> str:
    state = dicom_import_state(job)
    return f"DICOM import {job.pk} is {state}: roles are set and confirmed only while it waits for review."


def dicom_import_confirm(*, job: DicomImport, actor, roles: dict | None = None, queue: bool = True) -> DicomImport:
    """Confirm the roles (``roles``, optional, applied first) and queue the creation of the scans.

    Also sends again a creation that failed (the series already stored are kept as they are).
    """
    with transaction.atomic():
        job = _locked(job)
        retry = job.phase == DicomImportPhase.CREATE and job.status == JobStatus.FAILED
        if not (_in_review(job) or retry):
            raise Conflict(_not_in_review(job), code="not_in_review")
        changes = _roles_apply(job, roles or {})
        job.phase = DicomImportPhase.CREATE
        job.status = JobStatus.QUEUED
        job.progress = 0.0
        job.message = "confirmed: waiting for a worker to create the scans"
        job.error = job.error_code = ""
        job.sent_at = job.finished_at = None
        job.confirmed_by = actor if actor is not None and actor.is_authenticated else None
        job.confirmed_at = timezone.now()
        job.save()
        plan = dicom.import_plan(job.series, list(job.project.channels))
        audit_log(
            actor=actor,
            project=job.project,
            action="dicom_import.confirm",
            target=job,
            data={
                "changes": changes,
                "roles": {row["index"]: row["role"] for row in job.series if row["status"] == "ready"},
                "plan": {index: p["plan"] for index, p in plan.items()},
                "retry": retry,
            },
        )
        if queue:
            enqueue_on_commit(dicom_import_execute_task, job.pk)
    return job


def dicom_import_discard(*, job: DicomImport, actor) -> DicomImport:
    """Drop an import waiting for review (or failed, or not yet started): its staged files are
    removed and no scan is made. An import being analysed or creating scans answers 409."""
    with transaction.atomic():
        job = _locked(job)
        waiting = job.phase == DicomImportPhase.ANALYSE and job.status == JobStatus.QUEUED
        if not (_in_review(job) or job.status == JobStatus.FAILED or waiting):
            raise Conflict(
                f"DICOM import {job.pk} is {dicom_import_state(job)}: it can be discarded while it waits for review, "
                "or once it failed.",
                code="not_discardable",
            )
        upload = job.upload_name
        job.phase = DicomImportPhase.DISCARDED
        if job.status != JobStatus.FAILED:
            job.status = JobStatus.DONE  # a worker that takes it later leaves it alone
            job.finished_at = timezone.now()
        job.upload_name = ""
        job.message = "discarded"
        for row in job.series:
            for key in _PRIVATE_KEYS:
                row.pop(key, None)
        job.save()
        audit_log(actor=actor, project=job.project, action="dicom_import.discard", target=job, data={})
        pk = job.pk
        transaction.on_commit(lambda: (spool_remove(upload), _staging_remove(pk)), robust=True)
    return job


# --- creation -------------------------------------------------------------------------------------


def _read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def _metadata(row: dict) -> dict:
    """The scan metadata a series gives: its role, and its field strength when it is plausible."""
    meta = {"sequence": row["role"]}
    try:
        return scan_metadata.clean_record({**meta, "field_strength": row.get("field_strength")})
    except (ValidationFailed, InputRefused):
        return scan_metadata.clean_record(meta)


def _refusal(row: dict, error: Exception) -> None:
    """Record a service's refusal on the row, or raise it again when it is the storage failing
    (the job fails and is retried; the series stored so far stay)."""
    fault = storage_fault(error)
    if fault is not None:
        raise fault
    row.update(status="refused", error=error.code, detail=error.message)


def _create(job: DicomImport) -> DicomImport:
    project = job.project
    actor = job.confirmed_by or job.requested_by
    rows = job.series
    by_index = {row["index"]: row for row in rows}
    plan = dicom.import_plan(rows, list(project.channels))
    clock = _Clock()
    start = 0.8 if job.auto_confirm else 0.0
    todo = [row for row in rows if row["status"] == "ready"]
    # Scans first, then their channels, so a channel finds its scan.
    order = sorted(todo, key=lambda r: (plan[r["index"]]["plan"] != "scan", r["index"]))
    for n, row in enumerate(order, start=1):
        job_progress(
            DicomImport,
            job.pk,
            start + (1 - start) * (n - 1) / max(len(order), 1),
            f"storing series {n} of {len(order)}",
        )
        step = plan[row["index"]]
        if step["plan"] in ("superseded", "not_declared", "no_reference"):
            row.update(status=step["plan"], detail=step["detail"])
        elif step["plan"] == "scan":
            with clock.step("store"):
                _create_scan(job, row, actor=actor)
        else:
            reference = by_index[step["reference"]]
            with clock.step("store"):
                _create_channel(row, reference, actor=actor)
        DicomImport.objects.filter(pk=job.pk).update(series=rows)
    _staging_remove(job.pk)
    for row in rows:
        for key in _PRIVATE_KEYS:
            row.pop(key, None)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in OUTCOMES}
    with transaction.atomic():
        job = DicomImport.objects.select_for_update().select_related("project").get(pk=job.pk)
        job.series = rows
        job.summary = {**job.summary, **counts, "scans": len({r["scan"] for r in rows if r.get("scan")})}
        job.timings = {**job.timings, **clock.rounded()}
        job.phase = DicomImportPhase.FINISHED
        job.mark_done(f"{counts['stored']} stored, {counts['duplicate']} duplicate, {counts['refused']} refused")
        job.save()
        audit_log(
            actor=actor,
            project=project,
            action="scan.dicom_import",
            target=project,
            data={
                "import": job.pk,
                "files": job.files,
                "ignored_files": job.ignored_files,
                "series": len(rows),
                **counts,
                "results": [{k: r.get(k) for k in AUDITED_RESULT_KEYS} for r in _audited(rows)],
                "deidentification": job.deidentification,
            },
        )
    return job


def _file_name(row: dict) -> str:
    """The scan's pseudonymous name: ``<subject>_<session>_run-NN_<role>.nii.gz`` (no header text)."""
    return f"{row['subject']}_{row['session']}_run-{row['index']:02d}_{row['role']}.nii.gz"


def _create_scan(job: DicomImport, row: dict, *, actor) -> None:
    try:
        scan = scan_create(
            project=job.project,
            actor=actor,
            raw=_read(row["nifti"]),
            filename=_file_name(row),
            subject_id=row["subject"],
            session_id=row["session"],
            split=job.split,
            metadata=_metadata(row),
            dicom_series=_read(row["dicom_zip"]),
        )
    except Conflict as error:
        if error.code != "duplicate_scan":
            raise
        row.update(status="duplicate", scan=error.extra.get("scan"), error=error.code, detail=error.message)
        return
    except (ServiceError, InputRefused) as error:
        _refusal(row, error)
        return
    row.update(status="stored", scan=scan.pk, detail="stored as a scan")


def _create_channel(row: dict, reference: dict, *, actor) -> None:
    scan = Scan.objects.filter(pk=reference.get("scan")).first() if reference.get("scan") else None
    if scan is None:
        row.update(
            status="refused",
            error="no_reference",
            detail=f"the {reference['role']} series it belongs to (#{reference.get('series_number')}) made no scan",
        )
        return
    try:
        channel = scan_channel_add(
            scan=scan, actor=actor, raw=_read(row["nifti"]), role=row["role"], dicom_series=_read(row["dicom_zip"])
        )
    except Conflict as error:
        if error.code != "duplicate_channel":
            raise
        row.update(status="duplicate", scan=scan.pk, error=error.code, detail=error.message)
        return
    except (ServiceError, InputRefused) as error:
        _refusal(row, error)
        return
    row.update(
        status="stored",
        scan=scan.pk,
        channel=row["role"],
        resampled=channel.resampled,
        detail=f"stored as the {row['role']} channel of scan {scan.pk}"
        + (" (resampled onto its grid)" if channel.resampled else ""),
    )


def _staging_remove(pk: int) -> None:
    """Remove an import's staged files (de-identified; removed once the scans hold them)."""
    folder = f"{STAGING}/{pk}"
    try:
        _, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return
    for name in files:
        file_delete(name=f"{folder}/{name}")
    if isinstance(default_storage, FileSystemStorage):
        try:
            os.rmdir(default_storage.path(folder))
        except OSError:
            pass


# --- what the pages see ---------------------------------------------------------------------------


def dicom_import_state(job: DicomImport) -> str:
    """One word for the page: queued, analysing, review, creating, done, failed or discarded."""
    if job.phase == DicomImportPhase.DISCARDED:
        return "discarded"
    if job.status == JobStatus.FAILED:
        return "failed"
    if job.phase == DicomImportPhase.ANALYSE:
        return "analysing" if job.status == JobStatus.RUNNING else "queued"
    if job.phase == DicomImportPhase.REVIEW:
        return "review"
    if job.phase == DicomImportPhase.CREATE:
        return "creating"
    return "done"


def dicom_import_rows(job: DicomImport) -> list[dict]:
    """The job's series as the page shows them: numbers, role, status, and while the import
    waits (or is being created) what the plan does with each usable series."""
    plan = {}
    if job.phase in (DicomImportPhase.REVIEW, DicomImportPhase.CREATE, DicomImportPhase.ANALYSE):
        plan = dicom.import_plan(job.series, list(job.project.channels))
    out = []
    for row in job.series:
        shown = {k: v for k, v in row.items() if k not in _PRIVATE_KEYS}
        step = plan.get(row["index"])
        if step is not None and row["status"] == "ready":
            shown.update(plan=step["plan"], plan_detail=step["detail"], reference=step["reference"])
        out.append(shown)
    return out


def dicom_import_report(job: DicomImport) -> dict:
    """A finished import in one dict: ``results`` (one per series, ``series`` its number in the
    study), the counts per outcome and ``ignored_files``."""
    results = [{**row, "series": row["index"]} for row in dicom_import_rows(job)]
    counts = {s: sum(1 for r in results if r["status"] == s) for s in (*OUTCOMES, "ready")}
    return {
        "import": job.pk,
        "state": dicom_import_state(job),
        "results": results,
        "ignored_files": job.ignored_files,
        **counts,
    }
