"""Consensus runs: request (idempotent), execute (retry-safe), and what they store.

A run is identified by its inputs: the scan, the method, every option (defaults included)
and the ids of the input revisions. Requesting the same thing twice gives the same run;
executing a run twice leaves one result: files are written under the run's own id and
rows are replaced per (run, rater), inside one transaction. The arithmetic is in
``consensus.fusion``; why a run needs a lead, in ``consensus.flagging``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.db import transaction

from labeling import volumes
from labeling.models import AnnotationRevision, AssignmentStatus, Scan, ScanStatus
from labeling.selectors import assignment_head, label_values
from labeling.services import audit_log, label_counts, sha256_hex
from mriannot.errors import Conflict, ValidationFailed
from mriannot.jobs import JobStatus, job_execute, job_progress, job_send_if_stale
from mriannot.queue import enqueue_on_commit
from mriannot.storage import file_write
from mriannot.version import code_version

from .. import agreement, flagging
from ..fusion import KERNELS, Fusion, ambiguity, fuse, method_defaults, rater_performance
from ..models import (
    AgreementLabel,
    AgreementPair,
    AgreementRaterScore,
    AgreementRun,
    ConsensusRun,
    GroundTruthSource,
    Method,
    RaterPerformance,
    run_file_path,
)
from ..tasks import consensus_run_execute_task
from .ground_truth import _ground_truth_create, current_ground_truth


def resolve_options(*, method: str, options: dict | None) -> dict:
    """Merge ``options`` into the method's defaults; refuse unknown names and wrong types."""
    if method not in KERNELS:
        raise ValidationFailed(f"Unknown method {method!r}; use one of {sorted(KERNELS)}.", code="unknown_method")
    defaults = method_defaults(method)
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValidationFailed(
            f"Unknown options for {method}: {unknown}; valid options are {sorted(defaults)}.", code="unknown_option"
        )
    resolved = {**defaults, **options}
    for name, value in resolved.items():
        default = defaults[name]
        if (
            isinstance(default, bool) != isinstance(value, bool)
            or (isinstance(default, (int, float)) and not isinstance(value, (int, float)))
            or (isinstance(default, str) and not isinstance(value, str))
        ):
            raise ValidationFailed(f"Option {name!r} must be like {default!r}, not {value!r}.", code="invalid_option")
    return resolved


def submitted_revisions(*, scan: Scan) -> list[AnnotationRevision]:
    """The head revision of every submitted assignment of the scan, in assignment order."""
    revisions = []
    for assignment in scan.assignments.filter(status=AssignmentStatus.SUBMITTED).order_by("id"):
        head = assignment_head(assignment=assignment)
        if head is not None:
            revisions.append(head)
    return revisions


def _input_key(method: str, options: dict, revision_ids: list[int]) -> str:
    payload = json.dumps({"method": method, "options": options, "revisions": revision_ids}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def consensus_run_request(
    *, scan: Scan, actor, method: str = Method.STAPLE, options: dict | None = None
) -> tuple[ConsensusRun, bool]:
    """Queue a consensus run of the scan's submitted revisions, or return the same run.

    Returns ``(run, queued)``: ``queued`` is False when an identical run already exists and is
    queued, running or done. A failed identical run is queued again (same row).
    """
    resolved = resolve_options(method=method, options=options)
    revisions = submitted_revisions(scan=scan)
    if len(revisions) < 2:
        raise Conflict(
            f"Consensus needs at least 2 submitted raters; scan {scan.pk} has {len(revisions)}.",
            code="not_enough_raters",
        )
    revision_ids = [r.pk for r in revisions]
    key = _input_key(method, resolved, revision_ids)
    with transaction.atomic():
        run, created = ConsensusRun.objects.get_or_create(
            scan=scan,
            input_key=key,
            defaults={"method": method, "options": resolved, "revision_ids": revision_ids, "requested_by": actor},
        )
        if not created and run.status != JobStatus.FAILED:
            job_send_if_stale(run)  # a lost message or a dead worker: send it again
            return run, False
        if not created:
            ConsensusRun.objects.filter(pk=run.pk).update(status=JobStatus.QUEUED, progress=0.0, error="", message="")
            run.refresh_from_db()
        audit_log(
            actor=actor,
            project=scan.project,
            action="consensus.queue",
            target=run,
            data={"method": method, "options": resolved, "revisions": revision_ids},
        )
        enqueue_on_commit(consensus_run_execute_task, run.pk)
    return run, True


def _progress(run_id: int, fraction: float, message: str) -> None:
    job_progress(ConsensusRun, run_id, fraction, message)


def write_file(name: str, data: bytes) -> str:
    """Write a job's file at exactly ``name``, whole and verified; a leftover from a crashed
    attempt is replaced in one step (:func:`mriannot.storage.file_write`)."""
    return file_write(name=name, data=data).name


def flag_rules(project) -> flagging.FlagRules:
    """The project's thresholds for sending a consensus to a lead."""
    return flagging.FlagRules(
        max_uncertain_fraction=project.ambiguity_threshold,
        min_label_dice=project.flag_min_label_dice,
        max_volume_spread=project.flag_max_volume_spread,
        max_rater_gap=project.flag_max_rater_gap,
    )


def run_flag_reasons(
    *,
    scan: Scan,
    revisions: list[AnnotationRevision],
    fusion: Fusion,
    report: dict,
    performances: list[dict],
    uncertain_fraction: float,
) -> list[dict]:
    """Every reason this consensus needs a lead (see consensus.flagging), with figures."""
    names = {label.value: label.name for label in scan.project.label_classes.all()}
    users = {
        u.pk: u.get_username() for u in get_user_model().objects.filter(pk__in=[r.created_by_id for r in revisions])
    }
    return flagging.flag_reasons(
        uncertain_fraction=uncertain_fraction,
        report=report,
        rater_dice=[{k: v for k, v in perf["dice"].items() if k != "0"} for perf in performances],
        voxel_ml=float(np.prod(scan.spacing)) / 1000.0,
        decision=fusion.decision,
        label_names=names,
        rater_names=[users.get(r.created_by_id, f"rater {i + 1}") for i, r in enumerate(revisions)],
        rules=flag_rules(scan.project),
    )


#: The scan states a finished run may change: every rater submitted, or a consensus is there already.
_DECIDABLE = (ScanStatus.SUBMITTED, ScanStatus.CONSENSUS, ScanStatus.FLAGGED)


def _scan_decide(*, run: ConsensusRun, file_name: str, sha: str, counts: dict) -> None:
    """Let a finished run decide its scan's state (inside the run's transaction).

    A run decides only a scan whose every rater has submitted and only if it fused exactly their
    current submissions: while a submission is back with its rater for rework (or before every
    rater submitted) a run is history and decides nothing. A scan with a ground truth keeps it: a
    lead's rerun does not replace it. Otherwise a flagged run makes the scan ``flagged``, waiting
    for a lead; a clear one makes it ``consensus`` and becomes its ground truth when there is none
    yet, or when this is the first run since the raters (re)submitted (``submitted``): a scan
    coming back from rework is decided afresh, and its new truth supersedes the earlier one. A
    ground truth already made from these very submissions (the rater resubmitted unchanged) stands.
    """
    scan = Scan.objects.select_for_update().select_related("project").get(pk=run.scan_id)
    if scan.status not in _DECIDABLE or [r.pk for r in submitted_revisions(scan=scan)] != run.revision_ids:
        return
    truth = current_ground_truth(scan=scan)
    if truth is not None and truth.run is not None and truth.run.revision_ids == run.revision_ids:
        Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.GROUND_TRUTH)
        return
    fresh = scan.status == ScanStatus.SUBMITTED
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.FLAGGED if run.flagged else ScanStatus.CONSENSUS)
    if not run.flagged and (truth is None or fresh):
        # No evidence of disagreement and nothing adjudicated since: the consensus is the ground truth.
        _ground_truth_create(
            scan=scan,
            actor=None,
            source=GroundTruthSource.CONSENSUS,
            run=run,
            file_name=file_name,
            sha=sha,
            counts=counts,
            note=f"no flag: ambiguity {run.ambiguity:.4f} <= {scan.project.ambiguity_threshold}, raters agree",
        )


def consensus_outcome_apply(*, run: ConsensusRun) -> None:
    """Let a run that is done already decide its scan again: the raters resubmitted exactly what it
    fused (a submission sent back for rework and submitted unchanged), so no new run is made."""
    with transaction.atomic():
        run = ConsensusRun.objects.select_for_update().get(pk=run.pk)
        if run.status != JobStatus.DONE:
            return
        with default_storage.open(run.labels_file.name, "rb") as handle:
            data = handle.read()
        labels, _ = volumes.read_array(data)
        _scan_decide(run=run, file_name=run.labels_file.name, sha=sha256_hex(data), counts=label_counts(labels))
        audit_log(
            actor=None,
            project=run.scan.project,
            action="consensus.reapply",
            target=run,
            data={"flagged": run.flagged, "revisions": run.revision_ids},
        )


def consensus_run_execute(*, run_id: int) -> ConsensusRun:
    """Execute a run. Safe to call twice: a finished run is returned as it is."""
    return job_execute(ConsensusRun, run_id, _execute, select_related=("scan", "scan__project"))


def _load_revisions(run: ConsensusRun) -> tuple[np.ndarray, list[AnnotationRevision]]:
    by_id = AnnotationRevision.objects.select_related("assignment").in_bulk(run.revision_ids)
    revisions = [by_id[i] for i in run.revision_ids]
    arrays = []
    for revision in revisions:
        with default_storage.open(revision.file.name, "rb") as handle:
            data, _ = volumes.read_array(handle.read())
        arrays.append(np.asarray(data, dtype=np.uint8))
    return np.stack(arrays), revisions


def _execute(run: ConsensusRun) -> ConsensusRun:
    scan, timings = run.scan, {}
    t0 = time.perf_counter()
    _progress(run.pk, 0.05, "loading the raters' label maps")
    segmentations, revisions = _load_revisions(run)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _progress(run.pk, 0.2, f"fusing {len(revisions)} raters ({run.method})")
    fusion = fuse(segmentations, method=run.method, options=run.options, values=label_values(project=scan.project))
    timings["fuse"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _progress(run.pk, 0.6, "measuring inter-rater agreement")
    spacing = tuple(float(s) for s in scan.spacing)
    schema_labels = [v for v in fusion.label_values if v != 0]
    report = agreement.agreement_report(segmentations, spacing=spacing, labels=schema_labels).to_dict()
    performances = rater_performance(segmentations, fusion)
    score, details = ambiguity(segmentations, fusion, report)
    reasons = run_flag_reasons(
        scan=scan,
        revisions=revisions,
        fusion=fusion,
        report=report,
        performances=performances,
        uncertain_fraction=score,
    )
    timings["agreement"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _progress(run.pk, 0.8, "writing the consensus and posterior maps")
    affine = np.asarray(scan.affine, dtype=np.float64)
    labels_bytes = volumes.label_map_to_bytes(fusion.labels.astype(np.uint8), affine)
    labels_name = write_file(run_file_path(scan.pk, run.pk, "labels.nii.gz"), labels_bytes)
    posterior_name = write_file(
        run_file_path(scan.pk, run.pk, "posterior.nii.gz"),
        volumes.probability_map_to_bytes(np.moveaxis(fusion.posterior, 0, -1), affine),
    )
    timings["write"] = time.perf_counter() - t0

    with transaction.atomic():
        run = ConsensusRun.objects.select_for_update().select_related("scan__project").get(pk=run.pk)
        if run.status == JobStatus.DONE:  # another execution finished first; its files are the same
            return run
        RaterPerformance.objects.filter(run=run).delete()
        RaterPerformance.objects.bulk_create(
            RaterPerformance(run=run, rater_index=i, revision=revision, annotator_id=revision.created_by_id, **perf)
            for i, (revision, perf) in enumerate(zip(revisions, performances, strict=True))
        )
        run.labels_file.name = labels_name
        run.posterior_file.name = posterior_name
        run.label_values = fusion.label_values
        run.kernel_report = fusion.options
        run.iterations = fusion.iterations
        run.converged = fusion.converged
        run.agreement = report
        run.ambiguity = score
        run.ambiguity_details = details
        run.flag_reasons = reasons
        run.flagged = bool(reasons)
        run.timings = timings
        run.code_version = code_version()
        run.mark_done(f"flagged for adjudication: {reasons[0]['message']}" if run.flagged else "done")
        run.save()
        agreement_rows_write(
            run=run,
            rater_ids=[r.created_by_id for r in revisions],
            performances=[
                (revision.created_by_id, perf["dice"], perf["sensitivity"], perf["specificity"])
                for revision, perf in zip(revisions, performances, strict=True)
            ],
        )
        _scan_decide(run=run, file_name=labels_name, sha=sha256_hex(labels_bytes), counts=label_counts(fusion.labels))
        audit_log(
            actor=None,
            project=scan.project,
            action="consensus.done",
            target=run,
            data={
                "ambiguity": score,
                "flagged": run.flagged,
                "reasons": [r["code"] for r in reasons],
                "iterations": run.iterations,
            },
        )
    return run


# --- agreement aggregates: what the project's agreement dashboard reads -------------------------

_AGREEMENT_MODELS = (AgreementRun, AgreementLabel, AgreementPair, AgreementRaterScore)
_PAIR_FIGURES = ("dice", "jaccard", "hausdorff95", "assd", "surface_dice")


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def agreement_rows(
    *, run: ConsensusRun, project_id: int, rater_ids: list[int], performances: list[tuple], current: bool
) -> list:
    """The agreement rows of a finished run (unsaved): its :class:`AgreementRun`, one
    :class:`AgreementLabel` per label of its report, one :class:`AgreementPair` per label and
    rater pair, one :class:`AgreementRaterScore` per rater and label (background left out).

    ``rater_ids`` is the user of each rater index (who made each input revision); each of
    ``performances`` is ``(annotator id, dice, sensitivity, specificity)`` with label-keyed dicts.
    """
    report = run.agreement or {}
    common = {"run_id": run.pk, "project_id": project_id, "scan_id": run.scan_id, "current": current}
    day = run.finished_at.date()
    rows: list = []
    dice = []
    for pair in report.get("pairs", []):
        figures = {k: _finite(pair.get(k)) for k in _PAIR_FIGURES}
        dice.append(figures["dice"])
        rows.append(
            AgreementPair(
                **common,
                finished_on=day,
                label=int(pair["label"]),
                rater_a_id=rater_ids[pair["rater_a"]],
                rater_b_id=rater_ids[pair["rater_b"]],
                **figures,
            )
        )
    known = [d for d in dice if d is not None]
    overall = report.get("overall", {})
    every = overall.get("all", {})
    rows.append(
        AgreementRun(
            **common,
            finished_on=day,
            mean_pairwise_dice=sum(known) / len(known) if known else None,
            fleiss_kappa=_finite(every.get("fleiss_kappa")),
            krippendorff_alpha=_finite(every.get("krippendorff_alpha")),
        )
    )
    for key, figures in overall.items():
        if key.lstrip("-").isdigit():
            rows.append(
                AgreementLabel(
                    **common,
                    label=int(key),
                    fleiss_kappa=_finite(figures.get("fleiss_kappa")),
                    krippendorff_alpha=_finite(figures.get("krippendorff_alpha")),
                )
            )
    for annotator_id, dice_by_label, sensitivity, specificity in performances:
        for label, value in dice_by_label.items():
            if label == "0":
                continue
            rows.append(
                AgreementRaterScore(
                    **common,
                    annotator_id=annotator_id,
                    label=int(label),
                    dice=_finite(value),
                    sensitivity=_finite(sensitivity.get(label)),
                    specificity=_finite(specificity.get(label)),
                )
            )
    return rows


def agreement_rows_create(*, rows: list) -> None:
    """Insert rows of :func:`agreement_rows` (of any number of runs), a bulk insert per table."""
    for model in _AGREEMENT_MODELS:
        model.objects.bulk_create([row for row in rows if type(row) is model], batch_size=2000)


def agreement_current_refresh(*, scan_id: int) -> None:
    """Mark the rows of the scan's newest finished run ``current``, and no others."""
    latest = (
        ConsensusRun.objects.filter(scan_id=scan_id, status=JobStatus.DONE)
        .order_by("-finished_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    for model in _AGREEMENT_MODELS:
        model.objects.filter(scan_id=scan_id, current=True).exclude(run_id=latest).update(current=False)
        if latest is not None:
            model.objects.filter(run_id=latest, current=False).update(current=True)


def agreement_rows_write(*, run: ConsensusRun, rater_ids: list[int], performances: list[tuple]) -> None:
    """Write a run's agreement rows as it finishes (inside its transaction; a second write of the
    same run replaces them) and make the scan's newest finished run the current one.

    The scan's row is locked first (as :func:`_scan_decide` locks it after): two runs of one scan
    finishing at once take turns, and the second sees the first's rows, so one run stays current."""
    Scan.objects.select_for_update().filter(pk=run.scan_id).values_list("pk", flat=True).first()
    for model in _AGREEMENT_MODELS:
        model.objects.filter(run_id=run.pk).delete()
    agreement_rows_create(
        rows=agreement_rows(
            run=run, project_id=run.scan.project_id, rater_ids=rater_ids, performances=performances, current=False
        )
    )
    agreement_current_refresh(scan_id=run.scan_id)
