"""The agreement tables computed afresh from every finished run's report: what the dashboard
computed per request before it read the aggregates written as runs finish. The reference
``consensus.selectors.project_agreement`` is tested against (test_agreement_aggregates.py)."""

from __future__ import annotations

from consensus.models import ConsensusRun
from consensus.selectors import _PAIR_FIGURES, rater_flags_set
from mriannot.jobs import JobStatus


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


def project_agreement_compute(*, project) -> dict:
    """Inter-rater agreement of a project, from the newest finished consensus run of each scan,
    computed afresh from every run's report (its cost grows with the project: the dashboard reads
    :func:`project_agreement`; this is the reference the aggregates are tested against).

    Returns plain tables (lists of dicts) ready for JSON or CSV:
    ``labels``, ``pairs`` (every scan, label and rater pair, raters by username), ``per_label``,
    ``per_rater`` (Dice against consensus, STAPLE sensitivity/specificity, flag), ``rater_matrix``
    (mean pairwise Dice between raters), ``over_time`` (per day and label), ``scans`` (least
    agreed first), ``by_metadata`` (mean pairwise Dice per label by each scan metadata column
    and group: :func:`agreement_by_metadata`).
    """
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
    flag_rule = rater_flags_set(per_rater=per_rater)

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
        "rater_flag_rule": flag_rule,
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
