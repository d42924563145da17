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


#: How many rows of the scans table (least agreed first) the dashboard's JSON holds; the CSV has all.
AGREEMENT_SCANS_SHOWN = 100

#: Columns of the two big tables, which stream as CSV (:func:`agreement_table_rows`).
AGREEMENT_SCAN_FIELDS = (
    "scan",
    "subject_id",
    "run",
    "status",
    "mean_pairwise_dice",
    "fleiss_kappa",
    "krippendorff_alpha",
    "ambiguity",
    "flagged",
    "flag_reasons",
)
AGREEMENT_PAIR_FIELDS = (
    "scan",
    "subject_id",
    "run",
    "date",
    "label",
    "label_name",
    "rater_a",
    "rater_b",
    *_PAIR_FIGURES,
)


def _label_names(project) -> dict[int, str]:
    return {lc.value: lc.name for lc in project.label_classes.all()}


def _current(model, project):
    return model.objects.filter(project=project, current=True)


def agreement_scan_rows(*, project):
    """The scans table, least agreed first (no mean pairwise Dice last, then by scan id): the newest
    finished run of every scan, ordered in the database; rows as :func:`_scan_row` reads them."""
    from django.db.models import F

    from .models import AgreementRun

    return (
        _current(AgreementRun, project)
        .order_by(F("mean_pairwise_dice").asc(nulls_last=True), "scan_id")
        .values(
            "scan_id",
            "scan__subject_id",
            "run_id",
            "scan__status",
            "mean_pairwise_dice",
            "fleiss_kappa",
            "krippendorff_alpha",
            "run__ambiguity",
            "run__flagged",
            "run__flag_reasons",
        )
    )


def _scan_row(row: dict) -> dict:
    return {
        "scan": row["scan_id"],
        "subject_id": row["scan__subject_id"],
        "run": row["run_id"],
        "status": row["scan__status"],
        "mean_pairwise_dice": row["mean_pairwise_dice"],
        "fleiss_kappa": row["fleiss_kappa"],
        "krippendorff_alpha": row["krippendorff_alpha"],
        "ambiguity": row["run__ambiguity"],
        "flagged": row["run__flagged"],
        "flag_reasons": "; ".join(r["message"] for r in row["run__flag_reasons"] or []),
    }


def agreement_table_rows(*, project, table: str):
    """Every row of the ``scans`` or ``pairs`` table, streamed from the database (an iterator of
    dicts with :data:`AGREEMENT_SCAN_FIELDS` or :data:`AGREEMENT_PAIR_FIELDS`)."""
    from .models import AgreementPair

    if table == "scans":
        return (_scan_row(row) for row in agreement_scan_rows(project=project).iterator(chunk_size=2000))
    if table != "pairs":
        raise ValueError(f"not a streamed table: {table!r}")
    names = _label_names(project)
    rows = (
        _current(AgreementPair, project)
        .order_by("scan_id", "run_id", "id")
        .values_list(
            "scan_id",
            "scan__subject_id",
            "run_id",
            "finished_on",
            "label",
            "rater_a__username",
            "rater_b__username",
            *_PAIR_FIGURES,
        )
    )
    return (
        {
            "scan": scan,
            "subject_id": subject,
            "run": run,
            "date": day.isoformat(),
            "label": label,
            "label_name": names.get(label, str(label)),
            "rater_a": a,
            "rater_b": b,
            **dict(zip(_PAIR_FIGURES, figures, strict=True)),
        }
        for scan, subject, run, day, label, a, b, *figures in rows.iterator(chunk_size=2000)
    )


def _ratio(total, count) -> float | None:
    return float(total) / count if count else None


def project_agreement(*, project, scans_shown: int = AGREEMENT_SCANS_SHOWN) -> dict:
    """Inter-rater agreement of a project, aggregated in the database from the agreement rows of
    each scan's newest finished consensus run (written as runs finish; see
    ``consensus.services.runs.agreement_rows_write``). A fixed number of queries, whatever the
    size of the project.

    The tables mean what the tables computed from every run's report meant (the reference the
    tests hold them to: ``tests/consensus/agreement_oracle.py``), except that ``scans`` holds
    only the ``scans_shown`` least agreed scans and there is no ``pairs`` list: ``totals`` counts
    the scans and the pairs and gives the mean pairwise Dice
    over every pair; :func:`agreement_table_rows` streams both tables whole.
    """
    from django.db.models import Avg, Count, Sum

    from labeling.metadata import COLUMNS, NOT_RECORDED, group_of

    from .models import AgreementLabel, AgreementPair, AgreementRaterScore, AgreementRun

    label_names = _label_names(project)

    def name(label: int) -> str:
        return label_names.get(label, str(label))

    pairs = _current(AgreementPair, project)
    scans_total = _current(AgreementRun, project).count()
    scans = [_scan_row(row) for row in agreement_scan_rows(project=project)[:scans_shown]]

    by_label = {
        row["label"]: row
        for row in pairs.values("label").annotate(
            n=Count("id"),
            n_dice=Count("dice"),
            **{f"mean_{k}": Avg(k) for k in _PAIR_FIGURES},
        )
    }
    kappas = {
        row["label"]: row
        for row in _current(AgreementLabel, project)
        .values("label")
        .annotate(kappa=Avg("fleiss_kappa"), alpha=Avg("krippendorff_alpha"))
    }
    scores = _current(AgreementRaterScore, project)
    rater_label = list(scores.values("annotator__username", "label").annotate(dice=Avg("dice")))
    labels = sorted(set(by_label) | {row["label"] for row in rater_label})
    per_label = [
        {
            "label": label,
            "label_name": name(label),
            "pairs": by_label.get(label, {}).get("n", 0),
            **{f"mean_{k}": by_label.get(label, {}).get(f"mean_{k}") for k in _PAIR_FIGURES},
            "mean_fleiss_kappa": kappas.get(label, {}).get("kappa"),
            "mean_krippendorff_alpha": kappas.get(label, {}).get("alpha"),
        }
        for label in labels
    ]
    n_dice = sum(row["n_dice"] for row in by_label.values())
    totals = {
        "scans": scans_total,
        "pairs": sum(row["n"] for row in by_label.values()),
        "mean_pairwise_dice": _ratio(
            sum(row["mean_dice"] * row["n_dice"] for row in by_label.values() if row["n_dice"]), n_dice
        ),
    }

    per_rater = []
    label_dice: dict[str, dict[int, float | None]] = {}
    for row in rater_label:
        label_dice.setdefault(row["annotator__username"], {})[row["label"]] = row["dice"]
    for row in (
        scores.values("annotator__username")
        .annotate(
            scans=Count("run", distinct=True),
            dice=Avg("dice"),
            sensitivity=Avg("sensitivity"),
            specificity=Avg("specificity"),
        )
        .order_by("annotator__username")
    ):
        rater = row["annotator__username"]
        per_rater.append(
            {
                "rater": rater,
                "scans": row["scans"],
                "mean_dice_vs_consensus": row["dice"],
                "mean_sensitivity": row["sensitivity"],
                "mean_specificity": row["specificity"],
                **{f"dice_label_{label}": label_dice.get(rater, {}).get(label) for label in labels},
            }
        )
    flag_rule = rater_flags_set(per_rater=per_rater)

    matrix: dict[tuple[str, str], list[float]] = {}  # (a, b) -> [n, figures, sum]
    for row in pairs.values("rater_a__username", "rater_b__username").annotate(
        n=Count("id"), n_dice=Count("dice"), total=Sum("dice")
    ):
        a, b = sorted((row["rater_a__username"], row["rater_b__username"]))
        cell = matrix.setdefault((a, b), [0, 0, 0.0])
        cell[0] += row["n"]
        cell[1] += row["n_dice"]
        cell[2] += row["total"] or 0.0
    rater_matrix = [
        {"rater_a": a, "rater_b": b, "mean_dice": _ratio(total, k), "n": n}
        for (a, b), (n, k, total) in sorted(matrix.items())
    ]

    over_time = [
        {
            "date": row["finished_on"].isoformat(),
            "label": row["label"],
            "label_name": name(row["label"]),
            "mean_dice": row["mean_dice"],
            "pairs": row["n"],
        }
        for row in pairs.values("finished_on", "label")
        .annotate(mean_dice=Avg("dice"), n=Count("id"))
        .order_by("finished_on", "label")
    ]

    # By metadata: one grouping by every column at once; each scan is in exactly one group of it,
    # so a column's group sums its scans, pairs and Dice over the combinations it spans.
    groups: dict[tuple[str, str, int], list] = {}  # -> [scans, pairs, sum of Dice]
    for row in (
        pairs.filter(dice__isnull=False)
        .values(*(f"scan__{c}" for c in COLUMNS), "label")
        .annotate(scans=Count("scan", distinct=True), n=Count("id"), total=Sum("dice"))
        .order_by()
    ):
        for column in COLUMNS:
            cell = groups.setdefault((column, group_of(column, row[f"scan__{column}"]), row["label"]), [0, 0, 0.0])
            cell[0] += row["scans"]
            cell[1] += row["n"]
            cell[2] += row["total"]
    order = {column: i for i, column in enumerate(COLUMNS)}
    by_metadata = [
        {
            "column": column,
            "group": group,
            "label": label,
            "label_name": name(label),
            "scans": n_scans,
            "pairs": n,
            "mean_dice": total / n,
        }
        for (column, group, label), (n_scans, n, total) in sorted(
            groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] == NOT_RECORDED, kv[0][1], kv[0][2])
        )
    ]
    return {
        "labels": [{"value": label, "name": name(label)} for label in labels],
        "totals": totals,
        "scans": scans,
        "scans_shown": len(scans),
        "per_label": per_label,
        "per_rater": per_rater,
        "rater_matrix": rater_matrix,
        "over_time": over_time,
        "by_metadata": by_metadata,
        "rater_flag_rule": flag_rule,
    }


def rater_flags_set(*, per_rater: list[dict]) -> dict:
    """Flag the raters whose mean Dice against the consensus lies more than ``RATER_FLAG_MADS``
    robust SDs (and at least ``RATER_FLAG_MIN_GAP``) below the median rater's: sets
    ``below_median_by`` and ``flagged`` on each row; returns the rule with its median and SD."""
    import statistics

    figures = [row["mean_dice_vs_consensus"] for row in per_rater if row["mean_dice_vs_consensus"] is not None]
    median = statistics.median(figures) if figures else None
    mad = statistics.median(abs(s - median) for s in figures) * 1.4826 if figures else None
    for row in per_rater:
        score = row["mean_dice_vs_consensus"]
        gap = None if score is None or median is None else median - score
        row["below_median_by"] = gap
        row["flagged"] = bool(gap is not None and gap > max(RATER_FLAG_MADS * mad, RATER_FLAG_MIN_GAP))
    return {"median_dice": median, "robust_sd": mad, "mads": RATER_FLAG_MADS, "min_gap": RATER_FLAG_MIN_GAP}
