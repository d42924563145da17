"""Why a consensus needs a lead: the evidence of disagreement, with figures.

A consensus is made ground truth without a person only when nothing says the raters
disagree.  The posterior alone cannot say it: a fit that followed one rater has a posterior
of ~1 everywhere (docs/staple.md, "Degenerate fits").  So a run is flagged when any of
these holds, and each one found is stored as a reason:

``uncertain``
    The fraction of labelled voxels whose consensus label has a posterior below 0.9 exceeds the
    project's ambiguity threshold.
``low_agreement``
    A label's mean pairwise Dice between raters is below the project's minimum.
``volume_spread``
    A label's volumes differ between raters by more than the project's maximum:
    (largest - smallest) / mean.
``rater_below_others``
    A rater's mean Dice against the consensus is more than the project's gap below the
    median rater's.
``empty_rater`` / ``missing_label``
    A rater labelled nothing while the others did, or never used a label that every other
    rater used (on at least ``MIN_LABEL_VOXELS`` voxels).  Always on.
``collapse``
    The fit declared one rater near perfect while that rater agrees poorly with every
    other rater; the kernel then fell back to the vote.  Always on.

Pure module: no Django, no files.  Inputs are the JSON forms the run stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

#: A label the other raters used on fewer voxels than this is not "missing" from a rater.
MIN_LABEL_VOXELS = 20


@dataclass(frozen=True)
class FlagRules:
    """The project's thresholds.  ``None`` turns a rule off."""

    max_uncertain_fraction: float | None = 0.05
    min_label_dice: float | None = 0.5
    max_volume_spread: float | None = 0.5
    max_rater_gap: float | None = 0.25


def flag_reasons(
    *,
    uncertain_fraction: float,
    report: dict,
    rater_dice: list[dict],
    voxel_ml: float,
    decision: dict | None,
    label_names: dict[int, str],
    rater_names: list[str],
    rules: FlagRules,
) -> list[dict]:
    """Every reason to send the scan to a lead, most serious first.

    Parameters
    ----------
    uncertain_fraction
        Fraction of labelled voxels whose consensus label has a posterior below 0.9.
    report
        ``agreement.agreement_report(...).to_dict()``: per-label pairwise Dice and volumes.
    rater_dice
        Per rater (in rater order), label value (str) -> Dice against the consensus.
    voxel_ml
        Volume of one voxel in ml (to turn volumes into voxel counts).
    decision
        The STAPLE kernel's ``decision`` dict (``collapse`` is read), or None.
    label_names, rater_names
        For the messages.
    rules
        The thresholds.

    Returns
    -------
    list of dict
        ``{"code", "message", "value", "threshold"}`` plus ``label`` or ``rater`` (index)
        where the reason is about one.  Empty: nothing says the raters disagree.

    Examples
    --------
    >>> report = {"pairs": [{"label": 1, "rater_a": 0, "rater_b": 1, "dice": 0.3}],
    ...           "volumes": [{"rater": 0, "label": 1, "ml": 1.0},
    ...                       {"rater": 1, "label": 1, "ml": 1.1}]}
    >>> reasons = flag_reasons(uncertain_fraction=0.0, report=report,
    ...     rater_dice=[{"1": 0.9}, {"1": 0.8}], voxel_ml=0.008, decision=None,
    ...     label_names={1: "lesion"}, rater_names=["ann", "bob"], rules=FlagRules())
    >>> [(r["code"], r["message"]) for r in reasons]
    [('low_agreement', 'lesion: mean pairwise Dice 0.30 between raters (minimum 0.50)')]
    """

    def name(value: int) -> str:
        return label_names.get(value, f"label {value}")

    reasons: list[dict] = []
    collapse = (decision or {}).get("collapse")
    if collapse:
        r = collapse["rater"]
        reasons.append(
            {
                "code": "collapse",
                "rater": r,
                "value": collapse["dice_with_consensus"],
                "threshold": collapse["max_dice_with_others"],
                "message": (
                    f"STAPLE followed {rater_names[r]} alone (Dice {collapse['dice_with_consensus']:.2f} "
                    f"with its own consensus, at most {collapse['max_dice_with_others']:.2f} with any other "
                    "rater); the majority vote was kept"
                ),
            }
        )
    volumes = _volumes(report, voxel_ml)
    reasons += _missing(volumes, name, rater_names)
    if rules.max_uncertain_fraction is not None and uncertain_fraction > rules.max_uncertain_fraction:
        reasons.append(
            {
                "code": "uncertain",
                "value": uncertain_fraction,
                "threshold": rules.max_uncertain_fraction,
                "message": (
                    f"{uncertain_fraction:.1%} of labelled voxels have a posterior below 0.9 "
                    f"(threshold {rules.max_uncertain_fraction:.1%})"
                ),
            }
        )
    if rules.min_label_dice is not None:
        reasons += _low_agreement(report, rules.min_label_dice, name)
    if rules.max_volume_spread is not None:
        reasons += _volume_spread(volumes, rules.max_volume_spread, name)
    if rules.max_rater_gap is not None:
        reasons += _rater_below(rater_dice, rules.max_rater_gap, rater_names)
    return reasons


def _volumes(report: dict, voxel_ml: float) -> dict[int, dict[int, float]]:
    """label -> rater -> voxels."""
    out: dict[int, dict[int, float]] = {}
    for v in report.get("volumes", []):
        out.setdefault(int(v["label"]), {})[int(v["rater"])] = v["ml"] / voxel_ml if voxel_ml else 0.0
    return out


def _missing(volumes: dict[int, dict[int, float]], name, rater_names: list[str]) -> list[dict]:
    raters = sorted({r for per in volumes.values() for r in per})
    totals = {r: sum(per.get(r, 0.0) for per in volumes.values()) for r in raters}
    reasons = []
    empty = [r for r in raters if totals[r] == 0 and any(totals[s] > 0 for s in raters if s != r)]
    for r in empty:
        reasons.append(
            {
                "code": "empty_rater",
                "rater": r,
                "value": 0.0,
                "threshold": None,
                "message": f"{rater_names[r]} labelled nothing while the other raters did",
            }
        )
    for label, per in sorted(volumes.items()):
        for r in raters:
            if r in empty or per.get(r, 0.0) > 0:
                continue
            others = [per.get(s, 0.0) for s in raters if s != r]
            if others and min(others) >= MIN_LABEL_VOXELS:
                reasons.append(
                    {
                        "code": "missing_label",
                        "rater": r,
                        "label": label,
                        "value": 0.0,
                        "threshold": None,
                        "message": f"{rater_names[r]} never labelled {name(label)}; every other rater did",
                    }
                )
    return reasons


def _low_agreement(report: dict, minimum: float, name) -> list[dict]:
    per_label: dict[int, list[float]] = {}
    for pair in report.get("pairs", []):
        if pair.get("dice") is not None and pair.get("empty") != "both":
            per_label.setdefault(int(pair["label"]), []).append(pair["dice"])
    reasons = []
    for label, values in sorted(per_label.items()):
        mean = sum(values) / len(values)
        if mean < minimum:
            reasons.append(
                {
                    "code": "low_agreement",
                    "label": label,
                    "value": mean,
                    "threshold": minimum,
                    "message": f"{name(label)}: mean pairwise Dice {mean:.2f} between raters (minimum {minimum:.2f})",
                }
            )
    return reasons


def _volume_spread(volumes: dict[int, dict[int, float]], maximum: float, name) -> list[dict]:
    reasons = []
    for label, per in sorted(volumes.items()):
        values = list(per.values())
        mean = sum(values) / len(values) if values else 0.0
        if mean < MIN_LABEL_VOXELS:
            continue  # a few voxels: the spread is noise
        spread = (max(values) - min(values)) / mean
        if spread > maximum:
            reasons.append(
                {
                    "code": "volume_spread",
                    "label": label,
                    "value": spread,
                    "threshold": maximum,
                    "message": (
                        f"{name(label)}: rater volumes differ by {spread:.0%} of their mean (maximum {maximum:.0%})"
                    ),
                }
            )
    return reasons


def _rater_below(rater_dice: list[dict], gap: float, rater_names: list[str]) -> list[dict]:
    means = []
    for per in rater_dice:
        values = [v for v in per.values() if v is not None]
        means.append(sum(values) / len(values) if values else None)
    known = [m for m in means if m is not None]
    if len(known) < 3:
        return []  # with two raters, "the others" is one person
    middle = median(known)
    reasons = []
    for r, m in enumerate(means):
        if m is not None and middle - m > gap:
            reasons.append(
                {
                    "code": "rater_below_others",
                    "rater": r,
                    "value": m,
                    "threshold": middle - gap,
                    "message": (
                        f"{rater_names[r]}: mean Dice {m:.2f} against the consensus, "
                        f"{middle - m:.2f} below the median rater ({middle:.2f})"
                    ),
                }
            )
    return reasons
