"""Consensus runs: request (idempotent), execute (retry-safe), and what they store.

A run is identified by its inputs: the scan, the method, every option (defaults included)
and the ids of the input revisions. Requesting the same thing twice gives the same run;
executing a run twice leaves one result: files are written under the run's own id and
rows are replaced per (run, rater), inside one transaction.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
import uuid
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from labeling import volumes
from labeling.models import AnnotationRevision, AssignmentStatus, Scan, ScanStatus
from labeling.selectors import assignment_head, label_values
from labeling.services import audit_log, label_counts, sha256_hex, stored_file
from mriannot.errors import Conflict, ValidationFailed
from mriannot.jobs import JobStatus, job_execute, job_progress, job_send_if_stale
from mriannot.queue import enqueue_on_commit
from mriannot.version import code_version

from . import agreement, flagging, staple, voting
from .models import (
    ConsensusRun,
    Export,
    ExportFormat,
    GroundTruth,
    GroundTruthSource,
    Method,
    RaterPerformance,
    ground_truth_path,
    run_file_path,
)
from .signals import ground_truth_created
from .tasks import consensus_run_execute_task, export_execute_task

#: A voxel is uncertain when the posterior of its consensus label is below this.
UNCERTAIN_BELOW = 0.9

KERNELS = {Method.STAPLE: staple.staple_multilabel, Method.MAJORITY_VOTE: voting.majority_vote}
_NOT_OPTIONS = {"segmentations", "labels"}


def method_defaults(method: str) -> dict:
    """The kernel's keyword options and their defaults: what the app runs when nothing is asked."""
    signature = inspect.signature(KERNELS[method])
    return {
        name: param.default
        for name, param in signature.parameters.items()
        if name not in _NOT_OPTIONS and param.default is not inspect.Parameter.empty
    }


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


def _write(name: str, data: bytes) -> str:
    """Write a run's file at exactly ``name``; a leftover from a crashed attempt is replaced."""
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # pragma: no cover - a concurrent writer of the same run
        default_storage.delete(saved)
        raise RuntimeError(f"could not write {name}: the storage chose {saved}")
    return saved


@dataclass(frozen=True)
class Fusion:
    labels: np.ndarray  # (X, Y, Z) consensus labels
    posterior: np.ndarray  # (L, X, Y, Z) float32
    label_values: list[int]
    confusion: np.ndarray | None  # (R, L, L) rater label x true label, or None
    prior: np.ndarray | None
    iterations: int | None
    converged: bool | None
    options: dict
    decision: dict | None = None  # what STAPLE's decision rule did (collapse, margin)


def fuse(segmentations: np.ndarray, *, method: str, options: dict, values: list[int]) -> Fusion:
    """Run the method's kernel; for majority vote the 'posterior' is the vote fraction."""
    if method == Method.STAPLE:
        result = staple.staple_multilabel(segmentations, labels=values, **options)
        return Fusion(
            labels=result.labels,
            posterior=result.posterior,
            label_values=[int(v) for v in result.label_values],
            confusion=result.confusion,
            prior=result.prior,
            iterations=result.iterations,
            converged=result.converged,
            options={**result.options, "decision": result.decision},
            decision=result.decision,
        )
    result = voting.majority_vote(segmentations, labels=values, **options)
    label_values = [int(v) for v in result.label_values]
    fractions = np.stack([(segmentations == v).mean(axis=0, dtype=np.float32) for v in label_values])
    return Fusion(
        labels=result.labels,
        posterior=fractions,
        label_values=label_values,
        confusion=None,
        prior=None,
        iterations=None,
        converged=None,
        options={**options, "ties": int(result.ties)},
    )


def rater_performance(segmentations: np.ndarray, fusion: Fusion) -> list[dict]:
    """Per rater and label: sensitivity, specificity (from STAPLE's confusion matrix when there is
    one, else measured against the consensus) and Dice against the consensus."""
    values = fusion.label_values
    n = len(values)
    index = np.zeros(max(values) + 1, np.intp)
    index[values] = np.arange(n)
    truth = index[fusion.labels.ravel()]
    # Specificity weighs the other true labels by their mass over the whole volume (the
    # kernel's prior may describe only the contested voxels).
    mass = fusion.posterior.reshape(n, -1).sum(axis=1, dtype=np.float64)
    rows = []
    for r in range(segmentations.shape[0]):
        said = index[segmentations[r].ravel()]
        counts = np.bincount(said * n + truth, minlength=n * n).reshape(n, n).astype(np.float64)  # [said][truth]
        sens, spec, dice = {}, {}, {}
        for i, value in enumerate(values):
            tp = counts[i, i]
            fn = counts[:, i].sum() - tp
            fp = counts[i, :].sum() - tp
            tn = counts.sum() - tp - fn - fp
            dice[str(value)] = _finite(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else None
            if fusion.confusion is not None:
                theta = fusion.confusion[r]
                others = [c for c in range(n) if c != i]
                weight = mass[others]
                sens[str(value)] = _finite(theta[i, i])
                spec[str(value)] = _finite(
                    np.nansum(weight * (1.0 - theta[i, others])) / weight.sum() if weight.sum() else np.nan
                )
            else:
                sens[str(value)] = _finite(tp / (tp + fn)) if (tp + fn) else None
                spec[str(value)] = _finite(tn / (tn + fp)) if (tn + fp) else None
        rows.append(
            {
                "sensitivity": sens,
                "specificity": spec,
                "dice": dice,
                "confusion": None if fusion.confusion is None else _jsonable(fusion.confusion[r]),
            }
        )
    return rows


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(array: np.ndarray) -> list:
    return [[_finite(v) for v in row] for row in np.asarray(array, dtype=np.float64)]


def label_posterior(fusion: Fusion) -> np.ndarray:
    """The posterior of the consensus label at every voxel: how likely that label is right."""
    index = np.zeros(max(fusion.label_values) + 1, np.intp)
    index[fusion.label_values] = np.arange(len(fusion.label_values))
    return np.take_along_axis(fusion.posterior, index[fusion.labels][None], axis=0)[0]


def ambiguity(segmentations: np.ndarray, fusion: Fusion, report: dict | None) -> tuple[float, dict]:
    """How unsure the consensus is: the fraction of labelled voxels whose consensus label has a
    posterior below :data:`UNCERTAIN_BELOW` (the score), the expected fraction of labelled voxels
    whose label is wrong (the mean of 1 - posterior; the kernel's posterior is calibrated), and
    the lowest pairwise rater Dice."""
    labelled = (segmentations != 0).any(axis=0) | (fusion.labels != 0)
    n = int(labelled.sum())
    chosen = label_posterior(fusion)[labelled]
    uncertain = int((chosen < UNCERTAIN_BELOW).sum()) if n else 0
    score = uncertain / n if n else 0.0
    details = {
        "uncertain_fraction": score,
        "uncertain_voxels": uncertain,
        "labelled_voxels": n,
        "uncertain_below": UNCERTAIN_BELOW,
        "expected_error_fraction": float((1.0 - chosen.astype(np.float64)).mean()) if n else 0.0,
    }
    if report and report.get("pairs"):
        per_pair: dict[tuple, list] = {}
        for pair in report["pairs"]:
            if pair.get("dice") is not None:
                per_pair.setdefault((pair["rater_a"], pair["rater_b"]), []).append(pair["dice"])
        if per_pair:
            means = {k: float(np.mean(v)) for k, v in per_pair.items()}
            worst = min(means, key=means.get)
            details["min_pair_mean_dice"] = means[worst]
            details["min_pair"] = list(worst)
    return score, details


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
    labels_name = _write(run_file_path(scan.pk, run.pk, "labels.nii.gz"), labels_bytes)
    posterior_name = _write(
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
        # The newest finished run decides the scan's state, unless a lead already set a ground truth.
        Scan.objects.filter(
            pk=scan.pk, status__in=[ScanStatus.SUBMITTED, ScanStatus.CONSENSUS, ScanStatus.FLAGGED]
        ).update(status=ScanStatus.FLAGGED if run.flagged else ScanStatus.CONSENSUS)
        if not run.flagged and current_ground_truth(scan=scan) is None:
            # No evidence of disagreement and nothing adjudicated yet: the consensus is the ground truth.
            _ground_truth_create(
                scan=scan,
                actor=None,
                source=GroundTruthSource.CONSENSUS,
                run=run,
                file_name=labels_name,
                sha=sha256_hex(labels_bytes),
                counts=label_counts(fusion.labels),
                note=f"no flag: ambiguity {score:.4f} <= {scan.project.ambiguity_threshold}, raters agree",
            )
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


# --- ground truth: accept, edit, supersede ------------------------------------------------------


def current_ground_truth(*, scan: Scan) -> GroundTruth | None:
    return scan.ground_truths.order_by("-id").first()


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
    labels = volumes.load_label_map(
        raw,
        reference_shape=tuple(scan.shape),
        reference_affine=scan.affine,
        allowed_values=label_values(project=scan.project),
        max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES,
    )
    data = volumes.label_map_to_bytes(labels, np.asarray(scan.affine, dtype=np.float64))
    uid = uuid.uuid4()
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan.pk)
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


# --- dataset export ---------------------------------------------------------------------------


def export_request(
    *,
    project,
    actor,
    format: str,
    include_raters: bool = False,
    include_posterior: bool = False,
    only_adjudicated: bool = False,
    dataset_id: int = 500,
    queue: bool = True,
) -> Export:
    """Create an export of the project's ground truths and queue its task (unless ``queue`` is
    False: the management command runs it in its own process)."""
    if format not in ExportFormat.values:
        raise ValidationFailed(f"Unknown format {format!r}; use one of {ExportFormat.values}.", code="unknown_format")
    options = {
        "include_raters": include_raters,
        "include_posterior": include_posterior,
        "only_adjudicated": only_adjudicated,
        "dataset_id": dataset_id,
    }
    with transaction.atomic():
        export = Export.objects.create(project=project, format=format, options=options, requested_by=actor)
        audit_log(
            actor=actor, project=project, action="export.queue", target=export, data={"format": format, **options}
        )
        if queue:
            enqueue_on_commit(export_execute_task, export.pk)
    return export


def _export_sources(project, *, only_adjudicated: bool) -> list[tuple[Scan, GroundTruth | None, ConsensusRun | None]]:
    """(scan, ground truth, run) for every scan to export, in scan order."""
    rows = []
    for scan in Scan.objects.filter(project=project).order_by("id"):
        truth = current_ground_truth(scan=scan)
        if truth is not None:
            if only_adjudicated and truth.source == GroundTruthSource.CONSENSUS:
                continue
            rows.append((scan, truth, truth.run))
        elif not only_adjudicated:
            from .selectors import latest_done_run

            run = latest_done_run(scan=scan)
            if run is not None:
                rows.append((scan, None, run))
    return rows


def _read(field) -> bytes:
    with default_storage.open(field.name, "rb") as handle:
        return handle.read()


def _datasheet(project, sources, rater_names: dict[int, str]) -> dict:
    from statistics import mean

    runs = [run for _, _, run in sources if run is not None]
    methods = sorted({f"{run.method} {json.dumps(run.options, sort_keys=True)}" for run in runs})
    per_label: dict[int, list] = {}
    for run in runs:
        for pair in (run.agreement or {}).get("pairs", []):
            if pair.get("dice") is not None:
                per_label.setdefault(pair["label"], []).append(pair["dice"])
    names = {lc.value: lc.name for lc in project.label_classes.all()}
    raters: dict[str, dict[str, list]] = {}
    for perf in RaterPerformance.objects.filter(run__in=runs):
        name = rater_names.get(perf.annotator_id)
        if name is None:
            continue
        entry = raters.setdefault(name, {"dice": [], "sensitivity": [], "specificity": [], "runs": set()})
        entry["runs"].add(perf.run_id)
        for key in ("dice", "sensitivity", "specificity"):
            entry[key] += [v for k, v in getattr(perf, key).items() if k != "0" and v is not None]
    adjudicated = sum(1 for _, truth, _ in sources if truth and truth.source != GroundTruthSource.CONSENSUS)
    return {
        "motivation": project.description or "Segmentation ground truth for brain-MRI models.",
        "composition_note": (
            "SIMULATED data: scans derived from the MNI152 2009a template and simulated raters; no patient data."
            if project.is_simulated
            else ""
        ),
        "ground_truth_definition": (
            "the consensus of blinded raters fused by multi-label STAPLE (Warfield 2004, Rohlfing 2004); scans whose "
            f"consensus ambiguity exceeded {project.ambiguity_threshold} were adjudicated by a project lead"
        ),
        "annotators": f"{len(rater_names)} pseudonymous raters with the annotator role in the project",
        "raters_per_scan": project.raters_per_scan,
        "consensus_method": "; ".join(methods) or "none",
        "adjudication": f"{adjudicated} of {len(sources)} ground truths were accepted or edited by a lead; "
        "the others are the consensus of scans that were not ambiguous.",
        "agreement_summary": "mean pairwise Dice per label: "
        + ", ".join(f"{names.get(label, label)} {mean(v):.3f}" for label, v in sorted(per_label.items())),
        "raters": [
            {
                "rater": name,
                "scans": len(entry["runs"]),
                "dice": mean(entry["dice"]) if entry["dice"] else None,
                "sensitivity": mean(entry["sensitivity"]) if entry["sensitivity"] else None,
                "specificity": mean(entry["specificity"]) if entry["specificity"] else None,
            }
            for name, entry in sorted(raters.items())
        ],
    }


def export_execute(*, export_id: int) -> Export:
    """Build, verify and store an export. Safe to run twice: a finished export is returned as it is."""
    return job_execute(Export, export_id, _export_build, select_related=("project",))


def _export_build(export: Export) -> Export:
    import shutil
    import tempfile
    import zipfile
    from pathlib import Path

    from . import exporters

    project, options = export.project, export.options
    work = Path(tempfile.mkdtemp(prefix=f"mriannot-export-{export.pk}-"))
    try:
        sources = _export_sources(project, only_adjudicated=options.get("only_adjudicated", False))
        if not sources:
            raise Conflict(
                "Nothing to export: no scan has a ground truth or a finished consensus yet.", code="empty_export"
            )
        annotators = sorted(
            {
                rev.created_by_id
                for _, _, run in sources
                if run
                for rev in AnnotationRevision.objects.filter(pk__in=run.revision_ids)
            }
        )
        rater_names = {uid: f"rater{i + 1:02d}" for i, uid in enumerate(annotators)}
        prefix = {"nnunet": "case_", "monai": "case_", "bids": "sub-"}[export.format]
        cases, pseudonyms = [], {}
        for i, (scan, truth, run) in enumerate(sources):
            _progress_export(export.pk, 0.7 * i / len(sources), f"collecting scan {i + 1} of {len(sources)}")
            case_id = f"{prefix}{i + 1:03d}"
            pseudonyms[case_id] = scan.pk
            revisions = list(AnnotationRevision.objects.filter(pk__in=run.revision_ids)) if run else []
            overall = ((run.agreement or {}).get("overall", {}) or {}).get("all", {}) if run else {}
            pair_dice = (
                [p["dice"] for p in (run.agreement or {}).get("pairs", []) if p.get("dice") is not None] if run else []
            )
            cases.append(
                exporters.ExportCase(
                    case_id=case_id,
                    split=scan.split,
                    image=_read(scan.image),
                    labels=_read(truth.file if truth else run.labels_file),
                    posterior=_read(run.posterior_file) if run and options.get("include_posterior") else None,
                    posterior_labels=tuple(run.label_values) if run else (),
                    raters=tuple((rater_names[r.created_by_id], _read(r.file)) for r in revisions)
                    if options.get("include_raters")
                    else (),
                    ground_truth={
                        "source": truth.source if truth else "consensus_not_adjudicated",
                        "ground_truth_id": truth.pk if truth else None,
                        "consensus_run": run.pk if run else None,
                        "method": run.method if run else None,
                        "options": run.options if run else None,
                        "ambiguity": run.ambiguity if run else None,
                        "raters": [rater_names[r.created_by_id] for r in revisions],
                        "rater_revision_sha256": [r.sha256 for r in revisions],
                        "adjudicated_by": truth.created_by.username if truth and truth.created_by else None,
                        "code_version": run.code_version if run else None,
                    },
                    agreement={
                        "mean_pairwise_dice": float(np.mean(pair_dice)) if pair_dice else None,
                        "fleiss_kappa": overall.get("fleiss_kappa"),
                        "krippendorff_alpha": overall.get("krippendorff_alpha"),
                        "ambiguity": run.ambiguity if run else None,
                        "flagged": run.flagged if run else None,
                        "raters": len(revisions),
                    },
                )
            )
        spec = exporters.ExportSpec(
            format=export.format,
            project_name=project.name,
            labels={
                0: ("background", "#000000"),
                **{lc.value: (lc.name, lc.color) for lc in project.label_classes.all()},
            },
            include_raters=options.get("include_raters", False),
            include_posterior=options.get("include_posterior", False),
            dataset_id=options.get("dataset_id", 500),
            code_version=code_version(),
            datasheet=_datasheet(project, sources, rater_names),
        )
        summary = exporters.write_export(
            work, spec, cases, progress=lambda f, m: _progress_export(export.pk, 0.7 + 0.1 * f, m)
        )
        _progress_export(export.pk, 0.85, "re-reading and checking every file")
        problems = exporters.verify_export(work / summary["folder"], spec=spec)
        if problems:
            raise RuntimeError("the export failed its checks: " + "; ".join(problems[:10]))
        _progress_export(export.pk, 0.95, "packing the zip")
        archive = work / "export.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted((work / summary["folder"]).rglob("*")):
                if path.is_file():
                    compress = zipfile.ZIP_STORED if path.name.endswith(".gz") else zipfile.ZIP_DEFLATED
                    zf.write(path, path.relative_to(work).as_posix(), compress_type=compress)
        data = archive.read_bytes()
        name = _write(f"exports/{export.pk}.zip", data)
        with transaction.atomic():
            export = Export.objects.select_for_update().get(pk=export.pk)
            export.file.name = name
            export.sha256 = sha256_hex(data)
            export.size = len(data)
            export.summary = {**summary, "checks": "passed", "code_version": code_version(), "pseudonyms": pseudonyms}
            export.mark_done(f"{len(cases)} scans")
            export.save()
            audit_log(
                actor=None,
                project=project,
                action="export.done",
                target=export,
                data={"sha256": export.sha256, "cases": len(cases)},
            )
        return export
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _progress_export(export_id: int, fraction: float, message: str) -> None:
    job_progress(Export, export_id, fraction, message)
