"""Reads for consensus. Only leads and admins of a project see consensus results (blinding)."""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from labeling.models import Scan, ScanStatus
from labeling.selectors import managed_project_ids, user_is_site_admin
from mriannot.jobs import JobStatus

from .models import ConsensusRun


def run_list(*, user) -> QuerySet[ConsensusRun]:
    qs = ConsensusRun.objects.select_related("scan", "scan__project")
    if user_is_site_admin(user):
        return qs
    return qs.filter(scan__project_id__in=managed_project_ids(user=user))


def latest_done_run(*, scan: Scan) -> ConsensusRun | None:
    return scan.consensus_runs.filter(status=JobStatus.DONE).order_by("-finished_at", "-id").first()


def flagged_scan_queue(*, project) -> QuerySet[Scan]:
    """Scans waiting for adjudication, most ambiguous first (the newest finished run's ambiguity;
    none counts as 0), then oldest first: ordered and sliced in the database, each scan with
    ``latest_run_id``."""
    latest = ConsensusRun.objects.filter(scan=OuterRef("pk"), status=JobStatus.DONE).order_by("-finished_at", "-id")
    return (
        Scan.objects.filter(project=project, status=ScanStatus.FLAGGED)
        .annotate(
            latest_run_id=Subquery(latest.values("pk")[:1]),
            latest_ambiguity=Coalesce(Subquery(latest.values("ambiguity")[:1]), Value(0.0)),
        )
        .order_by("-latest_ambiguity", "id")
    )


def flagged_scan_runs(*, scans: list[Scan]) -> list[tuple[Scan, ConsensusRun | None]]:
    """Scans of :func:`flagged_scan_queue` with their newest finished run (one query for all; the
    runs carry only ``ambiguity`` and ``flag_reasons``)."""
    ids = [s.latest_run_id for s in scans if s.latest_run_id is not None]
    # Only what the queue shows: a run's agreement report and kernel output are large JSON.
    runs = ConsensusRun.objects.only("id", "scan_id", "ambiguity", "flag_reasons").in_bulk(ids)
    return [(scan, runs.get(scan.latest_run_id)) for scan in scans]


def flagged_scans(*, project) -> list[tuple[Scan, ConsensusRun | None]]:
    """Every scan waiting for adjudication with its newest finished run, most ambiguous first."""
    return flagged_scan_runs(scans=list(flagged_scan_queue(project=project)))


#: A rater is flagged when their mean Dice against the consensus is below the project median
#: by more than this many robust standard deviations (1.4826 x MAD), and by at least
#: RATER_FLAG_MIN_GAP in absolute Dice (so a tight team is not flagged for noise).
RATER_FLAG_MADS = 3.0
RATER_FLAG_MIN_GAP = 0.05

_PAIR_FIGURES = ("dice", "jaccard", "hausdorff95", "assd", "surface_dice")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def _latest_runs(project) -> list[ConsensusRun]:
    """The newest finished run of every scan of the project (one per scan)."""
    runs = (
        ConsensusRun.objects.filter(scan__project=project, status=JobStatus.DONE)
        .select_related("scan")
        .prefetch_related("performances__annotator")
        .order_by("scan_id", "-finished_at", "-id")
    )
    latest: dict[int, ConsensusRun] = {}
    for run in runs:
        latest.setdefault(run.scan_id, run)
    return list(latest.values())


#: How long a project's agreement tables are kept (seconds); any change they depend on makes new ones.
AGREEMENT_CACHE_S = 24 * 3600


def project_agreement(*, project) -> dict:
    """:func:`project_agreement_compute`, cached (Django's cache, per process by default).

    The key names everything the tables are made of: the project (and when it was made, so that
    a reused id is another key), its finished consensus runs (how many, the newest id and finish
    time), and its newest audit event, which every change to scan metadata, the label schema or
    the raters writes. A change makes a new key, so a cached answer is never stale; the first
    request after a change pays the full computation.
    """
    from django.core.cache import cache
    from django.db.models import Count, Max

    from labeling.models import AuditEvent

    runs = ConsensusRun.objects.filter(scan__project=project, status=JobStatus.DONE).aggregate(
        n=Count("id"), top=Max("id"), last=Max("finished_at")
    )
    event = AuditEvent.objects.filter(project=project).order_by("-id").values_list("id", flat=True).first()
    created = project.created_at.timestamp() if getattr(project, "created_at", None) else 0
    stamp = runs["last"].timestamp() if runs["last"] else 0
    key = f"mriannot:agreement:{project.pk}:{created}:{runs['n']}:{runs['top']}:{stamp}:{event}"
    data = cache.get(key)
    if data is None:
        data = project_agreement_compute(project=project)
        cache.set(key, data, timeout=AGREEMENT_CACHE_S)
    return data


def project_agreement_compute(*, project) -> dict:
    """Inter-rater agreement of a project, from the newest finished consensus run of each scan.

    Returns plain tables (lists of dicts) ready for JSON or CSV:
    ``labels``, ``pairs`` (every scan, label and rater pair, raters by username), ``per_label``,
    ``per_rater`` (Dice against consensus, STAPLE sensitivity/specificity, flag), ``rater_matrix``
    (mean pairwise Dice between raters), ``over_time`` (per day and label), ``scans`` (least
    agreed first), ``by_metadata`` (mean pairwise Dice per label by each scan metadata column
    and group: :func:`agreement_by_metadata`).
    """
    import statistics

    from labeling.models import AnnotationRevision

    label_names = {lc.value: lc.name for lc in project.label_classes.all()}
    runs = _latest_runs(project)
    revision_rater = dict(
        AnnotationRevision.objects.filter(pk__in=[i for run in runs for i in run.revision_ids]).values_list(
            "pk", "created_by__username"
        )
    )
    pairs, scans, per_rater_rows = [], [], []
    for run in runs:
        raters = [revision_rater.get(i, f"revision {i}") for i in run.revision_ids]
        report = run.agreement or {}
        scan_dice = []
        for pair in report.get("pairs", []):
            row = {
                "scan": run.scan_id,
                "subject_id": run.scan.subject_id,
                "run": run.pk,
                "date": run.finished_at.date().isoformat(),
                "label": pair["label"],
                "label_name": label_names.get(pair["label"], str(pair["label"])),
                "rater_a": raters[pair["rater_a"]],
                "rater_b": raters[pair["rater_b"]],
                **{k: pair.get(k) for k in _PAIR_FIGURES},
            }
            pairs.append(row)
            scan_dice.append(pair.get("dice"))
        overall = report.get("overall", {}).get("all", {})
        scans.append(
            {
                "scan": run.scan_id,
                "subject_id": run.scan.subject_id,
                "run": run.pk,
                "status": run.scan.status,
                "mean_pairwise_dice": _mean(scan_dice),
                "fleiss_kappa": overall.get("fleiss_kappa"),
                "krippendorff_alpha": overall.get("krippendorff_alpha"),
                "ambiguity": run.ambiguity,
                "flagged": run.flagged,
                "flag_reasons": "; ".join(r["message"] for r in run.flag_reasons),
            }
        )
        for perf in run.performances.all():
            for label, dice in perf.dice.items():
                if label == "0":
                    continue
                per_rater_rows.append(
                    {
                        "rater": perf.annotator.username,
                        "run": run.pk,
                        "label": int(label),
                        "dice": dice,
                        "sensitivity": perf.sensitivity.get(label),
                        "specificity": perf.specificity.get(label),
                    }
                )

    labels = sorted({row["label"] for row in pairs} | {row["label"] for row in per_rater_rows})
    per_label = []
    for label in labels:
        rows = [row for row in pairs if row["label"] == label]
        per_label.append(
            {
                "label": label,
                "label_name": label_names.get(label, str(label)),
                "pairs": len(rows),
                **{f"mean_{k}": _mean(row[k] for row in rows) for k in _PAIR_FIGURES},
                "mean_fleiss_kappa": _mean(
                    (run.agreement or {}).get("overall", {}).get(str(label), {}).get("fleiss_kappa") for run in runs
                ),
                "mean_krippendorff_alpha": _mean(
                    (run.agreement or {}).get("overall", {}).get(str(label), {}).get("krippendorff_alpha")
                    for run in runs
                ),
            }
        )

    per_rater = []
    for rater in sorted({row["rater"] for row in per_rater_rows}):
        rows = [row for row in per_rater_rows if row["rater"] == rater]
        per_rater.append(
            {
                "rater": rater,
                "scans": len({r["run"] for r in rows}),
                "mean_dice_vs_consensus": _mean(r["dice"] for r in rows),
                "mean_sensitivity": _mean(r["sensitivity"] for r in rows),
                "mean_specificity": _mean(r["specificity"] for r in rows),
                **{f"dice_label_{label}": _mean(r["dice"] for r in rows if r["label"] == label) for label in labels},
            }
        )
    scores = [row["mean_dice_vs_consensus"] for row in per_rater if row["mean_dice_vs_consensus"] is not None]
    median = statistics.median(scores) if scores else None
    mad = statistics.median(abs(s - median) for s in scores) * 1.4826 if scores else None
    for row in per_rater:
        score = row["mean_dice_vs_consensus"]
        gap = None if score is None or median is None else median - score
        row["below_median_by"] = gap
        row["flagged"] = bool(gap is not None and gap > max(RATER_FLAG_MADS * mad, RATER_FLAG_MIN_GAP))

    matrix: dict[tuple[str, str], list] = {}
    for row in pairs:
        a, b = sorted((row["rater_a"], row["rater_b"]))
        matrix.setdefault((a, b), []).append(row["dice"])
    rater_matrix = [
        {"rater_a": a, "rater_b": b, "mean_dice": _mean(v), "n": len(v)} for (a, b), v in sorted(matrix.items())
    ]

    by_day: dict[tuple[str, int], list] = {}
    for row in pairs:
        by_day.setdefault((row["date"], row["label"]), []).append(row["dice"])
    over_time = [
        {
            "date": d,
            "label": label,
            "label_name": label_names.get(label, str(label)),
            "mean_dice": _mean(v),
            "pairs": len(v),
        }
        for (d, label), v in sorted(by_day.items())
    ]
    scans.sort(key=lambda row: (row["mean_pairwise_dice"] is None, row["mean_pairwise_dice"] or 0.0))
    by_metadata = agreement_by_metadata(pairs=pairs, runs=runs, label_names=label_names)
    return {
        "labels": [{"value": label, "name": label_names.get(label, str(label))} for label in labels],
        "scans": scans,
        "pairs": pairs,
        "per_label": per_label,
        "per_rater": per_rater,
        "rater_matrix": rater_matrix,
        "over_time": over_time,
        "by_metadata": by_metadata,
        "rater_flag_rule": {
            "median_dice": median,
            "robust_sd": mad,
            "mads": RATER_FLAG_MADS,
            "min_gap": RATER_FLAG_MIN_GAP,
        },
    }


def agreement_by_metadata(*, pairs: list[dict], runs: list[ConsensusRun], label_names: dict) -> list[dict]:
    """Mean pairwise rater Dice per label, grouped by each scan metadata column (site, scanner,
    field strength, sequence, sex, age band).

    One row per column, group and label: ``column``, ``group``, ``label``, ``label_name``,
    ``scans`` (n: scans of the group with a pair measured for the label), ``pairs`` and
    ``mean_dice`` (over the group's pairs, as ``per_label`` averages).
    """
    from labeling.metadata import COLUMNS, breakdown

    values: dict[int, dict[int, list]] = {}
    for row in pairs:
        values.setdefault(row["scan"], {}).setdefault(row["label"], []).append(row["dice"])
    metadata = {run.scan_id: {c: getattr(run.scan, c) for c in COLUMNS} for run in runs}
    return [
        {
            "column": row["column"],
            "group": row["group"],
            "label": row["label"],
            "label_name": label_names.get(row["label"], str(row["label"])),
            "scans": row["scans"],
            "pairs": row["figures"],
            "mean_dice": row["mean"],
        }
        for row in breakdown(values, metadata)
    ]
