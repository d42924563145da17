"""Dataset export: gather every scan's ground truth (or latest consensus) and its channels, write
the layout of the format (``consensus.exporters``), check every file, and offer one zip.

A scan that lacks one of the channels its project declares is left out and named, with the
reason, in the datasheet.

The model cards of the model versions behind the labels (pre-labels a rater started from, the
project's current model) are asked of the apps that train through :data:`model_cards_requested`
(consensus knows nothing of active learning) and written under ``models/``.

Each scan's volumes are read when the writer comes to it (``ExportCase.load``), one scan at a
time; the zip is built in a temporary folder and stored from there in chunks
(:func:`mriannot.storage.file_write_from`): it is never held in memory whole."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from statistics import mean

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction

from labeling.models import AnnotationRevision, Scan, ScanStatus
from labeling.selectors import MissingChannels, scan_channel_files
from labeling.services import audit_log
from mriannot.errors import Conflict, ValidationFailed
from mriannot.jobs import job_execute, job_progress
from mriannot.queue import enqueue_on_commit
from mriannot.storage import file_write_from
from mriannot.version import code_version

from .. import exporters
from ..models import ConsensusRun, Export, ExportFormat, GroundTruth, GroundTruthSource, RaterPerformance
from ..selectors import latest_done_run
from ..signals import model_cards_requested
from ..tasks import export_execute_task
from .ground_truth import final_ground_truth


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
    """(scan, ground truth, run) for every scan to export, in scan order.

    Only scans whose consensus is there: a scan being labelled (a submission back with its rater
    for rework included) has nothing final to export, whatever runs or truths it had before."""
    rows = []
    decided = [ScanStatus.CONSENSUS, ScanStatus.FLAGGED, ScanStatus.GROUND_TRUTH]
    for scan in Scan.objects.filter(project=project, status__in=decided).order_by("id"):
        truth = final_ground_truth(scan=scan)
        if truth is not None:
            if only_adjudicated and truth.source == GroundTruthSource.CONSENSUS:
                continue
            rows.append((scan, truth, truth.run))
        elif not only_adjudicated:
            run = latest_done_run(scan=scan)
            if run is not None:
                rows.append((scan, None, run))
    return rows


def _read(field) -> bytes:
    with default_storage.open(field.name, "rb") as handle:
        return handle.read()


def _case_volumes(case, *, images, labels, posterior, raters, dicom) -> exporters.ExportCase:
    """``case`` with its volumes read from storage: the writer asks for one case at a time
    (:attr:`consensus.exporters.ExportCase.load`), so an export never holds every scan's volumes."""
    return dataclasses.replace(
        case,
        images=tuple((role, _read(file)) for role, file in images),
        labels=_read(labels),
        posterior=_read(posterior) if posterior else None,
        raters=tuple((name, _read(file)) for name, file in raters),
        dicom_source=_read(dicom) if dicom else None,
        load=None,
    )


def _datasheet(project, sources, rater_names: dict[int, str]) -> dict:
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


def _authors(export: Export, sources, rater_names: dict[int, str]) -> tuple[str, ...]:
    """The requester and the leads who adjudicated, by name, then the raters by pseudonym."""
    people = [export.requested_by] + [truth.created_by for _, truth, _ in sources if truth is not None]
    names = [user.get_full_name() or user.username for user in people if user is not None]
    pseudonyms = [f"{name} (pseudonymous rater)" for name in sorted(rater_names.values())]
    return tuple(dict.fromkeys(names)) + tuple(pseudonyms)


def _model_cards(project, revision_ids: Iterable[int]) -> list[dict]:
    """The answers to :data:`model_cards_requested`, one per model version, by version."""
    ids = sorted({int(i) for i in revision_ids})
    rows: dict[int, dict] = {}
    for _, answer in model_cards_requested.send(sender=Export, project=project, revision_ids=ids):
        for row in answer or []:
            rows.setdefault(row["version"], row)
    return [rows[version] for version in sorted(rows)]


def _models_datasheet(models: list[dict], cards: tuple, case_of: dict[int, str]) -> list[dict]:
    """The datasheet's ``models``: which version, where its card is, which exported cases started
    from its pre-labels and which it trained or validated on (by case id)."""

    def cases(scan_ids) -> list[str]:
        return sorted(case_of[s] for s in scan_ids if s in case_of)

    out = []
    for row, card in zip(models, cards, strict=True):
        data = row["card"].get("data", {})
        out.append(
            {
                "version": row["version"],
                "model_version": row["model_version"],
                "current": row["current"],
                "card": f"{card.folder}/model_card.json",
                "card_markdown": f"{card.folder}/model_card.md",
                "code_version": row["card"].get("code_version"),
                "prelabel_cases": cases(row["prelabel_scans"]),
                "training_ground_truths": len(data.get("train", [])),
                "validation_ground_truths": len(data.get("validation", [])),
                "trained_on_cases": cases(r.get("scan") for r in data.get("train", [])),
                "validated_on_cases": cases(r.get("scan") for r in data.get("validation", [])),
            }
        )
    return out


def _channel_files(sources) -> tuple[dict[int, list], list[dict]]:
    """(role, file) of every channel per scan id, and the scans left out for a missing channel."""
    files, excluded = {}, []
    for scan, _, _ in sources:
        try:
            files[scan.pk] = scan_channel_files(scan=scan)
        except MissingChannels as exc:
            excluded.append(
                {
                    "scan": scan.pk,
                    "missing_channels": list(exc.roles),
                    "reason": f"no {', '.join(exc.roles)} channel",
                }
            )
    return files, excluded


def export_execute(*, export_id: int) -> Export:
    """Build, verify and store an export. Safe to run twice: a finished export is returned as it is."""
    return job_execute(Export, export_id, _export_build, select_related=("project",))


def _export_build(export: Export) -> Export:
    project, options = export.project, export.options
    work = Path(tempfile.mkdtemp(prefix=f"mriannot-export-{export.pk}-"))
    try:
        sources = _export_sources(project, only_adjudicated=options.get("only_adjudicated", False))
        if not sources:
            raise Conflict(
                "Nothing to export: no scan has a ground truth or a finished consensus yet.", code="empty_export"
            )
        channel_files, excluded = _channel_files(sources)
        sources = [row for row in sources if row[0].pk in channel_files]
        if not sources:
            missing = sorted({role for row in excluded for role in row["missing_channels"]})
            raise Conflict(
                f"Nothing to export: every scan with a ground truth lacks a declared channel ({', '.join(missing)}).",
                code="empty_export",
            )
        revision_ids = [rid for _, _, run in sources if run for rid in run.revision_ids]
        annotators = sorted(
            {
                uid
                for k in range(0, len(revision_ids), 5000)  # SQLite takes at most 32,766 ids in a query
                for uid in AnnotationRevision.objects.filter(pk__in=revision_ids[k : k + 5000]).values_list(
                    "created_by_id", flat=True
                )
            }
        )
        rater_names = {uid: f"rater{i + 1:02d}" for i, uid in enumerate(annotators)}
        model_rows = _model_cards(project, revision_ids)
        started_from: dict[int, list[int]] = {}  # scan id -> the versions whose pre-labels a rater started from
        for row in model_rows:
            for scan_id in row["prelabel_scans"]:
                started_from.setdefault(scan_id, []).append(row["version"])
        prefix = "sub-" if export.format == "bids" else "case_"
        cases, pseudonyms = [], {}
        for i, (scan, truth, run) in enumerate(sources):
            _progress_export(export.pk, 0.1 * i / len(sources), f"collecting scan {i + 1} of {len(sources)}")
            case_id = f"{prefix}{i + 1:03d}"
            pseudonyms[case_id] = scan.pk
            revisions = list(AnnotationRevision.objects.filter(pk__in=run.revision_ids)) if run else []
            overall = ((run.agreement or {}).get("overall", {}) or {}).get("all", {}) if run else {}
            pair_dice = (
                [p["dice"] for p in (run.agreement or {}).get("pairs", []) if p.get("dice") is not None] if run else []
            )
            rater_files = (
                [(rater_names[r.created_by_id], r.file) for r in revisions] if options.get("include_raters") else []
            )
            case = exporters.ExportCase(
                case_id=case_id,
                split=scan.split,
                images=tuple((role, b"") for role, _ in channel_files[scan.pk]),  # read when written
                labels=b"",
                posterior_labels=tuple(run.label_values) if run else (),
                raters=tuple((name, b"") for name, _ in rater_files),
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
                    "prelabel_model_versions": started_from.get(scan.pk, []),
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
            volumes = functools.partial(
                _case_volumes,
                case,
                images=channel_files[scan.pk],
                labels=truth.file if truth else run.labels_file,
                posterior=run.posterior_file if run and options.get("include_posterior") else None,
                raters=rater_files,
                dicom=scan.dicom_series if export.format == "dicomseg" and scan.dicom_series else None,
            )
            cases.append(dataclasses.replace(case, load=volumes))
        cards = tuple(
            exporters.ModelCard(version=m["version"], card=m["card"], markdown=m["markdown"]) for m in model_rows
        )
        case_of = {scan_id: case_id for case_id, scan_id in pseudonyms.items()}
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
            datasheet={
                **_datasheet(project, sources, rater_names),
                "excluded_scans": excluded,
                "models": _models_datasheet(model_rows, cards, case_of),
            },
            channels=tuple(project.channels),
            authors=_authors(export, sources, rater_names),
            model_cards=cards,
        )
        summary = exporters.write_export(
            work, spec, cases, progress=lambda f, m: _progress_export(export.pk, 0.1 + 0.7 * f, m)
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
        stored = file_write_from(name=f"exports/{export.pk}.zip", source=archive)  # in chunks, verified
        with transaction.atomic():
            export = Export.objects.select_for_update().get(pk=export.pk)
            export.file.name = stored.name
            export.sha256 = stored.sha256
            export.size = stored.size
            export.summary = {
                **summary,
                "checks": "passed",
                "code_version": code_version(),
                "excluded_scans": excluded,
                "pseudonyms": pseudonyms,
                "model_versions": [m["version"] for m in model_rows],
            }
            export.mark_done(
                f"{len(cases)} scans" + (f", {len(excluded)} left out (missing channels)" if excluded else "")
            )
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
