"""Reads of active learning: the open scans, the latest model, the ranking as annotators see it,
pre-labels, editing effort."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import F, OuterRef, QuerySet, Subquery

from labeling.models import Assignment, PrelabelPolicy, Project, Scan, ScanStatus
from labeling.selectors import MissingChannels, scan_channel_list
from mriannot.jobs import JobStatus

from .models import EditingEffort, ModelVersion, ScanScore


def open_scans(*, project: Project):
    """Scans not yet fully labelled: ranking them is what saves radiologist time."""
    return Scan.objects.filter(project=project, status__in=[ScanStatus.NEW, ScanStatus.IN_PROGRESS]).order_by("id")


def latest_model(*, project: Project) -> ModelVersion | None:
    return project.model_versions.filter(status=JobStatus.DONE).order_by("-version").first()


def scan_input_files(*, scan: Scan, roles: Sequence[str]) -> list:
    """The files a network reading ``roles`` (:attr:`ModelVersion.channel_roles`) takes from a scan,
    in that order: the scan's image for its own sequence, its channels for the others. No roles:
    the scan's image alone.

    Raises :class:`labeling.selectors.MissingChannels` (``roles``: which) when the scan lacks some.
    """
    if not roles:
        return [scan.image]
    rows = {row["role"]: row for row in scan_channel_list(scan=scan)}
    missing = [role for role in roles if not (role in rows and rows[role]["present"])]
    if missing:
        raise MissingChannels(scan.pk, missing)
    return [rows[role]["channel"].image if rows[role]["channel"] is not None else scan.image for role in roles]


def unscored_reason(*, scan: Scan, model: ModelVersion | None) -> str | None:
    """Why the model cannot score a scan (it lacks a sequence the model reads), or None."""
    roles = model.channel_roles if model is not None else []
    try:
        scan_input_files(scan=scan, roles=roles)
    except MissingChannels as missing:
        return (
            f"Not scored: the scan has no {', '.join(missing.roles)} (model v{model.version} reads {', '.join(roles)})."
        )
    return None


def ranking_queue(*, project: Project) -> tuple[ModelVersion | None, QuerySet[Scan]]:
    """The latest model and the open scans in the order annotators will see them: by score under
    that model, higher first, unscored scans last, then oldest first (ordered and sliced in the
    database, so a page costs the same whatever the project's size)."""
    model = latest_model(project=project)
    score = ScanScore.objects.filter(scan=OuterRef("pk"), model_version=model).order_by("-id").values("score")[:1]
    scans = (
        open_scans(project=project)
        .annotate(rank_score=Subquery(score))
        .order_by(F("rank_score").desc(nulls_last=True), "id")
    )
    return model, scans


def ranking_rows(*, scans: list[Scan], model: ModelVersion | None) -> list[dict]:
    """The ranking's rows of these scans, with their scores under ``model`` (one query for all;
    ``unscored_reason`` says why when the scan lacks a sequence the model reads)."""
    scores = {s.scan_id: s for s in ScanScore.objects.filter(scan__in=scans, model_version=model).order_by("id")}
    rows = []
    for scan in scans:
        score = scores.get(scan.pk)
        rows.append(
            {
                "scan": scan.pk,
                "subject_id": scan.subject_id,
                "status": scan.status,
                "score": score.score if score else None,
                "entropy": score.entropy if score else None,
                "bald": score.bald if score else None,
                "disagreement": score.disagreement if score else None,
                "expected_volume_ml": score.expected_volume_ml if score else None,
                "strategy": score.strategy if score else None,
                "unscored_reason": None if score else unscored_reason(scan=scan, model=model),
            }
        )
    return rows


def ranking(*, project: Project) -> tuple[ModelVersion | None, list[dict]]:
    """Every open scan's row of the ranking, in order (:func:`ranking_queue`, :func:`ranking_rows`)."""
    model, scans = ranking_queue(project=project)
    return model, ranking_rows(scans=list(scans.select_related("project").prefetch_related("channels")), model=model)


def prelabel_for(*, assignment: Assignment) -> ScanScore | None:
    """The newest pre-label of the assignment's scan, unless the project's pre-label policy is off.

    Under "offered" the viewer lets the rater choose it or a blank start; under "applied" it
    starts from it (the project's ``prelabel_policy``, sent with the assignment).
    """
    if assignment.scan.project.prelabel_policy == PrelabelPolicy.OFF:
        return None
    return (
        ScanScore.objects.filter(scan=assignment.scan, model_version__isnull=False)
        .exclude(prelabel="")
        .select_related("model_version")
        .order_by("-model_version__version")
        .first()
    )


def editing_effort_list(*, project: Project) -> list[dict]:
    """How much each annotator changed the pre-labels they started from."""
    rows = EditingEffort.objects.filter(assignment__scan__project=project).select_related(
        "assignment__annotator", "model_version"
    )
    return [
        {
            "assignment": e.assignment_id,
            "scan": e.assignment.scan_id,
            "annotator": e.assignment.annotator.username,
            "model_version": e.model_version.version if e.model_version else None,
            "dice": e.dice,
            "mean_dice": e.mean_dice,
        }
        for e in rows
    ]


def split_usage(*, project: Project, scan_ids) -> list[dict]:
    """The finished model versions that trained or validated on these scans (their split is frozen).

    One dict per (scan, model version): ``scan``, ``model_version`` (id), ``version``,
    ``used_as`` ("train" or "validation"). A version records the ground truths it saw
    (``ground_truth_ids``, ``validation_ground_truth_ids``); a ground truth names its scan.
    """
    from consensus.models import GroundTruth

    wanted = {int(i) for i in scan_ids}
    if not wanted:
        return []
    versions = list(
        project.model_versions.filter(status=JobStatus.DONE)
        .order_by("version")
        .only("id", "version", "ground_truth_ids", "validation_ground_truth_ids")
    )
    truth_ids = {t for v in versions for t in (*v.ground_truth_ids, *v.validation_ground_truth_ids)}
    truth_scan = dict(GroundTruth.objects.filter(pk__in=truth_ids, scan_id__in=wanted).values_list("pk", "scan_id"))
    rows = []
    for version in versions:
        for used_as, ids in (("train", version.ground_truth_ids), ("validation", version.validation_ground_truth_ids)):
            for scan_id in sorted({truth_scan[t] for t in ids if t in truth_scan}):
                rows.append(
                    {"scan": scan_id, "model_version": version.pk, "version": version.version, "used_as": used_as}
                )
    return rows


def validation_by_metadata(*, version: ModelVersion) -> list[dict]:
    """The version's validation Dice per label, grouped by each scan metadata column, with n per group.

    One row per column, group and label: ``column``, ``group``, ``label``, ``label_name``,
    ``scans`` (n: validation scans of the group with the label measured) and ``mean_dice``
    (:func:`labeling.metadata.breakdown`); empty for a version that recorded no per-scan
    validation results (trained before they were kept).
    """
    from labeling.metadata import COLUMNS, breakdown

    per_scan = version.validation_dice_per_scan or {}
    values = {int(scan): {int(k): [v] for k, v in dice.items()} for scan, dice in per_scan.items()}
    metadata = {row["id"]: row for row in Scan.objects.filter(pk__in=list(values)).values("id", *COLUMNS)}
    names = dict(version.project.label_classes.values_list("value", "name"))
    return [
        {
            "column": row["column"],
            "group": row["group"],
            "label": row["label"],
            "label_name": names.get(row["label"], str(row["label"])),
            "scans": row["scans"],
            "mean_dice": row["mean"],
        }
        for row in breakdown(values, metadata)
    ]


_MODE_DESCRIPTION = {
    "patch": "patches at the scans' own resolution, sliding-window inference with Gaussian blending",
    "whole": "one whole working volume of about 3.4 mm (versions trained before patches)",
}


def model_card(*, version: ModelVersion) -> dict:
    """The version's model card as a JSON-ready dict (:func:`active_learning.model_card.card_markdown`
    renders it): ground truths trained and validated on (ids, scans, sha256, split), recipe and code
    version, validation Dice per label and per metadata group, calibration, intended use, limits."""
    from consensus.models import GroundTruth

    from .model_card import CARD_FORMAT, INTENDED_USE, known_limits

    project = version.project
    hyper = version.hyperparameters or {}
    truths = {
        t["id"]: t
        for t in GroundTruth.objects.filter(
            pk__in=[*version.ground_truth_ids, *version.validation_ground_truth_ids]
        ).values("id", "scan_id", "sha256")
    }

    def rows(ids):
        return [
            {"id": i, "scan": truths.get(i, {}).get("scan_id"), "sha256": truths.get(i, {}).get("sha256")} for i in ids
        ]

    network = hyper.get("network", {})
    mode = network.get("mode", "whole") if network else None
    calibration = hyper.get("calibration") or {}
    labels = {str(k): v for k, v in project.label_classes.order_by("value").values_list("value", "name")}
    return {
        "format": CARD_FORMAT,
        "id": version.pk,
        "version": version.version,
        "project": {"id": project.pk, "name": project.name},
        "status": version.status,
        "trigger": version.trigger,
        "finished_at": version.finished_at.isoformat() if version.finished_at else None,
        "code_version": version.code_version,
        "labels": labels,
        "model": {
            "mode": mode,
            "description": _MODE_DESCRIPTION.get(mode),
            "channels": version.channel_roles,
            "patch_shape": network.get("patch_shape") if mode == "patch" else None,
            "target_spacing_mm": network.get("target_spacing_mm") if mode == "patch" else None,
        },
        "data": {"train": rows(version.ground_truth_ids), "validation": rows(version.validation_ground_truth_ids)},
        "recipe": {
            "network": network,
            "training": hyper.get("training", {}),
            **{k: hyper[k] for k in ("steps_trained", "training_seconds") if k in hyper},
        },
        "validation": {
            "dice": version.validation_dice,
            "dice_per_scan": version.validation_dice_per_scan,
            "by_metadata": validation_by_metadata(version=version),
            "calibration": calibration,
        },
        "intended_use": INTENDED_USE,
        "known_limits": known_limits(label_names=labels.values(), channels=version.channel_roles),
    }


def prelabel_starts(*, revision_ids) -> dict[int, list[int]]:
    """The model versions whose pre-labels raters started from, for the assignments of these
    revisions: model version id -> the scans (ids, sorted) where a rater started from one.

    An assignment started from a pre-label when its first revision's source is ``prelabel``. The
    version is the one its editing effort names (recorded on submission); else, as
    :func:`active_learning.services.editing_effort_record` finds it, the newest pre-label of the
    scan made before that first revision, or the newest one at all. Ids are read in batches (an
    export of 10,000 scans names 30,000 revisions: more than SQLite takes in one query).
    """
    ids = sorted({int(i) for i in revision_ids})
    starts: dict[int, set[int]] = {}
    for k in range(0, len(ids), _BATCH):
        for version_id, scan_id in _prelabel_starts_batch(ids[k : k + _BATCH]):
            starts.setdefault(version_id, set()).add(scan_id)
    return {version_id: sorted(scans) for version_id, scans in starts.items()}


_BATCH = 5000


def _prelabel_starts_batch(revision_ids: list[int]) -> list[tuple[int, int]]:
    from labeling.models import AnnotationRevision, RevisionSource

    assignments = AnnotationRevision.objects.filter(pk__in=revision_ids).values("assignment_id")
    firsts = list(
        AnnotationRevision.objects.filter(
            assignment_id__in=assignments, number=1, source=RevisionSource.PRELABEL
        ).values_list("assignment_id", "assignment__scan_id", "created_at")
    )
    efforts = dict(
        EditingEffort.objects.filter(
            assignment_id__in=[a for a, _, _ in firsts], model_version__isnull=False
        ).values_list("assignment_id", "model_version_id")
    )
    pairs = []
    for assignment_id, scan_id, created_at in firsts:
        version_id = efforts.get(assignment_id)
        if version_id is None:
            scores = (
                ScanScore.objects.filter(scan_id=scan_id, model_version__isnull=False)
                .exclude(prelabel="")
                .order_by("-model_version__version")
            )
            score = scores.filter(created_at__lte=created_at).first() or scores.first()
            version_id = score.model_version_id if score is not None else None
        if version_id is not None:
            pairs.append((version_id, scan_id))
    return pairs


def export_model_cards(*, project: Project, revision_ids) -> list[dict]:
    """The model cards an export of these raters' revisions carries: every version whose pre-labels
    a rater started from (:func:`prelabel_starts`) and the project's current model, by version.

    One dict per version: ``model_version`` (id), ``version``, ``current``, ``prelabel_scans``
    (scan ids), ``card`` (:func:`model_card`) and ``markdown`` (the same card rendered). The answer
    to :data:`consensus.signals.model_cards_requested`.
    """
    from .model_card import card_markdown

    starts = prelabel_starts(revision_ids=revision_ids)
    current = latest_model(project=project)
    wanted = set(starts) | ({current.pk} if current is not None else set())
    rows = []
    for version in ModelVersion.objects.filter(project=project, pk__in=wanted).select_related("project"):
        card = model_card(version=version)
        rows.append(
            {
                "model_version": version.pk,
                "version": version.version,
                "current": current is not None and version.pk == current.pk,
                "prelabel_scans": starts.get(version.pk, []),
                "card": card,
                "markdown": card_markdown(card),
            }
        )
    return sorted(rows, key=lambda row: row["version"])
