"""Model cards of model versions: the facts as JSON, and the same card as Markdown.

Pure module (no Django): :func:`active_learning.selectors.model_card` gathers the facts of a
version into a dict; :func:`card_markdown` renders it. After Mitchell et al., "Model cards for
model reporting", FAT* 2019: what the model is, what it was trained and validated on, how well
it does per label and per group, how far its confidence can be trusted, what it is for and
what it is not for.

Examples
--------
>>> card = {"version": 3, "project": {"id": 1, "name": "Demo"}, "labels": {"1": "lesion"},
...         "validation": {"dice": {"1": 0.71}, "calibration": {"ece": 0.04, "voxels": 10}}}
>>> print(card_markdown(card).splitlines()[0])
# Model card: Demo, model v3
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["INTENDED_USE", "KNOWN_LIMITS", "card_markdown", "known_limits"]

CARD_FORMAT = "mriannot.model_card/1"

INTENDED_USE = (
    "Pre-labels that an annotator corrects, and the order of the annotation worklists (active "
    "learning) in this project. Not a diagnostic device: no output of it may be used for the "
    "care of a patient without a qualified reader's own assessment."
)

KNOWN_LIMITS = [
    "Trained on this project's ground truths only, from scratch: it knows the scanners, "
    "sequences and populations of the training scans, and nothing else.",
    "The recipe was chosen and its figures in docs/active_learning.md measured on SIMULATED "
    "data (the MNI152 template deformed, with synthetic lesions), not on patients.",
    "On the simulated lesion cohort at 2 mm (T1w + FLAIR), lesion Dice per held-out case was "
    "0.41-0.89 (mean 0.68) and 6 of 45 lesions of 3 mm radius or more were missed; smaller ones "
    "were not counted. Validation Dice of small structures varies widely between scans.",
    "Uncertainty (MC dropout) ranks scans; its calibration below is measured on the validation "
    "split, over voxels predicted or labelled as foreground.",
]


# Sequences on which white-matter lesions are bright whatever their T1 signal.
LESION_SEQUENCES = ("FLAIR", "T2w", "PDw")
LESION_WITHOUT_FLAIR = (
    "A lesion label learnt without FLAIR or T2w: on the simulated lesion cohort a T1w-only model "
    "misses most T1-hyperintense lesions (see docs/active_learning.md); declare the project's FLAIR "
    "or T2w sequence in its settings and the next version reads it."
)


# Label names that mean white-matter lesions: "lesion", "WMH", "white matter hyperintensities",
# "MS plaque", "demyelination", "leukoaraiosis".
LESION_NAME = re.compile(r"lesion|hyperintens|plaque|demyelin|leuko|\b(?:wmh|ms)\b", re.IGNORECASE)


def known_limits(*, label_names, channels) -> list[str]:
    """The card's known limits: :data:`KNOWN_LIMITS`, and a warning when a label named like a lesion
    is learnt from none of :data:`LESION_SEQUENCES` (a version with no declared channels reads the
    scan's own image, taken as T1w).

    Examples
    --------
    >>> len(known_limits(label_names=["lesion"], channels=["T1w"])) - len(KNOWN_LIMITS)
    1
    >>> len(known_limits(label_names=["White matter lesion"], channels=["T1w", "FLAIR"])) - len(KNOWN_LIMITS)
    0
    >>> len(known_limits(label_names=["WMH"], channels=[])) - len(KNOWN_LIMITS)
    1
    >>> len(known_limits(label_names=["CSF"], channels=[])) - len(KNOWN_LIMITS)
    0
    """
    lesion = any(LESION_NAME.search(str(name)) for name in label_names)
    if lesion and not set(channels or ()) & set(LESION_SEQUENCES):
        return [*KNOWN_LIMITS, LESION_WITHOUT_FLAIR]
    return list(KNOWN_LIMITS)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (every section tolerates missing keys: older versions have fewer facts)."""
    project = card.get("project", {})
    labels = card.get("labels", {})
    lines = [f"# Model card: {project.get('name', '?')}, model v{card.get('version', '?')}", ""]
    model = card.get("model", {})
    lines += [
        "## Model",
        "",
        f"- Status: {card.get('status', '?')}; trained {_fmt(card.get('finished_at'))}; "
        f"trigger {_fmt(card.get('trigger'))}",
        f"- Code version: {_fmt(card.get('code_version'))}",
        f"- Mode: {_fmt(model.get('mode'))} ({_fmt(model.get('description'))})",
        f"- Input channels: {', '.join(model.get('channels') or []) or 'the scan image'}",
        f"- Labels: {', '.join(f'{k} {v}' for k, v in labels.items()) or '–'}",
        "",
    ]
    data = card.get("data", {})
    lines += ["## Data", ""]
    for split in ("train", "validation"):
        rows = data.get(split, [])
        lines.append(f"### {split.capitalize()} ({len(rows)} ground truths)")
        lines.append("")
        if rows:
            lines += ["| ground truth | scan | sha256 |", "|---|---|---|"]
            lines += [f"| {r.get('id')} | {r.get('scan')} | `{(r.get('sha256') or '')[:16]}` |" for r in rows]
        else:
            lines.append("None.")
        lines.append("")
    recipe = card.get("recipe", {})
    if recipe:
        lines += ["## Recipe", ""]
        for part in ("network", "training"):
            values = recipe.get(part, {})
            if values:
                lines.append(f"- {part}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
        for key in ("steps_trained", "training_seconds"):
            if key in recipe:
                lines.append(f"- {key.replace('_', ' ')}: {recipe[key]}")
        lines.append("")
    validation = card.get("validation", {})
    lines += ["## Validation", ""]
    dice = validation.get("dice", {})
    if dice:
        lines += ["| label | Dice |", "|---|---|"]
        lines += [f"| {labels.get(k, k)} | {_fmt(v)} |" for k, v in dice.items()]
    else:
        lines.append("No validation ground truth.")
    lines.append("")
    groups = validation.get("by_metadata", [])
    if groups:
        lines += ["By scan metadata:", "", "| column | group | label | n | Dice |", "|---|---|---|---|---|"]
        lines += [
            f"| {g.get('column')} | {g.get('group')} | {g.get('label_name', g.get('label'))} | {g.get('scans')} | "
            f"{_fmt(g.get('mean_dice'))} |"
            for g in groups
        ]
        lines.append("")
    calibration = validation.get("calibration") or {}
    if calibration.get("ece") is not None:
        lines.append(
            f"Calibration: expected calibration error {_fmt(calibration['ece'])} over "
            f"{calibration.get('voxels', 0):,} voxels ({calibration.get('region', 'validation foreground')})."
        )
    else:
        lines.append("Calibration: not measured (no validation scan, or a version trained before it was).")
    lines += ["", "## Intended use", "", card.get("intended_use", INTENDED_USE), "", "## Known limits", ""]
    lines += [f"- {item}" for item in card.get("known_limits", KNOWN_LIMITS)]
    return "\n".join(lines) + "\n"
