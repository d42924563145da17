"""Ground truth: the consensus of a clear scan, or what a lead accepted or edited. Immutable: a
newer ground truth supersedes, nothing is overwritten."""

from __future__ import annotations

import uuid

import numpy as np
from django.db import transaction

from labeling import volumes
from labeling.models import Scan, ScanStatus
from labeling.selectors import scan_in_rework
from labeling.services import audit_log, label_counts, label_map_for_scan, sha256_hex, stored_file
from mriannot.errors import Conflict, ValidationFailed
from mriannot.jobs import JobStatus

from ..models import ConsensusRun, GroundTruth, GroundTruthSource, ground_truth_path
from ..signals import ground_truth_created


def current_ground_truth(*, scan: Scan) -> GroundTruth | None:
    """The scan's newest ground truth, final or not (see :func:`final_ground_truth`)."""
    return scan.ground_truths.order_by("-id").first()


def final_ground_truth(*, scan: Scan) -> GroundTruth | None:
    """The scan's ground truth if the scan is decided (status ``ground_truth``), else None.

    A scan whose submission a lead sent back for rework is being labelled again: its earlier
    ground truth stays (history) but is not final, nor while the consensus of the new
    submissions waits for a lead. Exports and training read this, not the newest row.
    """
    if scan.status != ScanStatus.GROUND_TRUTH:
        return None
    return current_ground_truth(scan=scan)


def _refuse_in_rework(scan: Scan) -> None:
    if scan_in_rework(scan=scan):
        raise Conflict(
            f"A submission of scan {scan.pk} is back with its rater for rework; decide the ground truth "
            "once they have resubmitted (the consensus reruns then).",
            code="in_rework",
        )


def _ground_truth_create(
    *, scan: Scan, actor, source: str, run: ConsensusRun | None, file_name: str, sha: str, counts: dict, note: str
) -> GroundTruth:
    previous = current_ground_truth(scan=scan)
    truth = GroundTruth(
        scan=scan,
        run=run,
        source=source,
        supersedes=previous,
        sha256=sha,
        label_counts=counts,
        note=note,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    truth.file.name = file_name
    truth.save()
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.GROUND_TRUTH)
    ground_truth_created.send(sender=GroundTruth, truth=truth)
    audit_log(
        actor=actor,
        project=scan.project,
        action=f"ground_truth.{source}",
        target=truth,
        data={"run": run.pk if run else None, "supersedes": previous.pk if previous else None, "note": note},
    )
    return truth


def ground_truth_accept(*, run: ConsensusRun, actor, note: str = "") -> GroundTruth:
    """A lead accepts a finished consensus run as the scan's ground truth (superseding any earlier one)."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=run.scan_id)
        _refuse_in_rework(scan)
        run.refresh_from_db()
        if run.status != JobStatus.DONE:
            raise Conflict(f"Run {run.pk} is {run.status}; only a finished run can be accepted.", code="run_not_done")
        current = current_ground_truth(scan=scan)
        if current is not None and current.run_id == run.pk and current.source != GroundTruthSource.EDITED:
            return current  # accepting the same run again changes nothing
        with run.labels_file.open("rb") as handle:
            data = handle.read()
        labels, _ = volumes.read_array(data)
        return _ground_truth_create(
            scan=scan,
            actor=actor,
            source=GroundTruthSource.ACCEPTED,
            run=run,
            file_name=run.labels_file.name,  # immutable already: referenced, not copied
            sha=sha256_hex(data),
            counts=label_counts(labels),
            note=note,
        )


def ground_truth_edit(*, scan: Scan, actor, raw: bytes, run: ConsensusRun | None = None, note: str = "") -> GroundTruth:
    """A lead saves an edited label map (validated like any label upload) as the ground truth."""
    if run is not None and run.scan_id != scan.pk:
        raise ValidationFailed(f"Run {run.pk} belongs to another scan.", code="wrong_run")
    labels = label_map_for_scan(scan=scan, raw=raw)
    data = volumes.label_map_to_bytes(labels, np.asarray(scan.affine, dtype=np.float64))
    uid = uuid.uuid4()
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan.pk)
        _refuse_in_rework(scan)
        with stored_file(ground_truth_path(scan.pk, uid), data) as name:
            truth = _ground_truth_create(
                scan=scan,
                actor=actor,
                source=GroundTruthSource.EDITED,
                run=run,
                file_name=name,
                sha=sha256_hex(data),
                counts=label_counts(labels),
                note=note,
            )
    return truth
