"""Patch model at the scans' own resolution: lesion Dice, lesion detection, tissue Dice. SIMULATED data.

Cohorts (``simulation``; nothing here is a real patient):

- ``--cohort lesion``: :func:`simulation.simulate_lesion_case` at 2 mm (binary lesion masks; about
  15 % of cases without lesions; lesions 2.5-7.5 mm equivalent radius, T1-hypo- or hyperintense).
  ``--first-seed 5000`` is the DEVELOPMENT cohort the recipe was chosen on; the reported numbers
  come from ``--first-seed 6000`` (the default), whose cases were not looked at before.
- ``--cohort tissue``: the multi-site cohort of ``bench_active_learning.py`` (seeds 1000-1034,
  25 training scans, 10 test scans; labels CSF, GM, WM, lesion).

One model is trained from scratch on the training cases (full data) with the product's patch
recipe, then every test case is predicted by sliding window and scored on its ORIGINAL 2 mm
grid: Dice per label (per case, cases where the label is in neither map left out), the lesion
Dice pooled over all test voxels, lesion-wise detection (a true lesion is found when a predicted
lesion voxel touches it; a predicted component that touches no true lesion is a false positive)
for true lesions of equivalent radius >= 3 mm, and the false-positive components on lesion-free
cases. Then MC-dropout scoring of each test case (T = 8 passes over the sliding windows): how
well does a scan's uncertainty point at its errors (Spearman of score against 1 - Dice) for
the region mean and for the top-k voxels.

Run::

    .venv/bin/python bench/bench_lesion_model.py --cohort lesion --first-seed 5000 --n 20 --n-test 4  # development
    .venv/bin/python bench/bench_lesion_model.py --cohort lesion                                      # report
    .venv/bin/python bench/bench_lesion_model.py --cohort tissue
    .venv/bin/python bench/bench_lesion_model.py --quick                                              # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DETECT_RADIUS_MM = 3.0


def lesion_cohort(n: int, *, first_seed: int, resolution: int = 2, channels=("T1w",)):
    """SIMULATED lesion cases: (ids, images, labels, spacing, each case's lesions: the simulation's list).

    One sequence per name in ``channels``: an image (X, Y, Z) for one, (C, X, Y, Z) for several
    (the same case in each contrast; the labels are the same)."""
    import simulation as sim

    anatomy = sim.mni152_anatomy(resolution=resolution)
    cases = [sim.simulate_lesion_case(anatomy, seed=first_seed + i, contrast=channels[0]) for i in range(n)]
    images = [c.image for c in cases]
    if len(channels) > 1:
        images = [
            np.stack([image] + [sim.simulate_lesion_case(anatomy, seed=c.seed, contrast=r).image for r in channels[1:]])
            for image, c in zip(images, cases, strict=True)
        ]
    return (
        [f"sim{c.seed}" for c in cases],
        images,
        [c.labels for c in cases],
        tuple(float(s) for s in anatomy.spacing),
        [list(c.parameters["lesions"]) for c in cases],
    )


def lesion_detection(prediction: np.ndarray, truth: np.ndarray, spacing, *, min_radius_mm: float) -> dict:
    """Lesion-wise counts: true lesions (26-connected) of equivalent radius >= ``min_radius_mm``
    found or missed; predicted components touching no true lesion (false positives)."""
    from scipy import ndimage as ndi

    structure = np.ones((3, 3, 3), bool)
    true_components, n_true = ndi.label(truth > 0, structure)
    pred_components, n_pred = ndi.label(prediction > 0, structure)
    voxel_mm3 = float(np.prod(spacing))
    found = missed = 0
    if n_true:
        sizes = ndi.sum_labels(np.ones_like(truth), true_components, index=np.arange(1, n_true + 1))
        radius = np.cbrt(3.0 * sizes * voxel_mm3 / (4.0 * np.pi))
        hit = ndi.maximum(prediction > 0, true_components, index=np.arange(1, n_true + 1))
        big = radius >= min_radius_mm
        found, missed = int((big & hit).sum()), int((big & ~hit).sum())
    false_positive = 0
    if n_pred:
        touches = ndi.maximum(truth > 0, pred_components, index=np.arange(1, n_pred + 1))
        false_positive = int((~np.asarray(touches, bool)).sum())
    return {"found": found, "missed": missed, "false_positive": false_positive, "predicted": int(n_pred)}


def f1(found: int, missed: int, false_positive: int) -> dict:
    """Precision, recall and F1 = 2 TP / (2 TP + FN + FP) (0 when nothing is found; NaN with no lesions at all)."""
    recall = found / (found + missed) if found + missed else float("nan")
    precision = found / (found + false_positive) if found + false_positive else float("nan")
    denominator = 2 * found + missed + false_positive
    return {"precision": precision, "recall": recall, "f1": 2 * found / denominator if denominator else float("nan")}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[keep], b[keep]).statistic) if keep.sum() > 2 else float("nan")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", choices=("lesion", "tissue"), default="lesion")
    parser.add_argument("--n", type=int, default=48, help="cases (lesion cohort)")
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (fixed: reproducible)")
    parser.add_argument("--patch", type=int, nargs=3, default=(48, 48, 48))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument(
        "--channels", default="T1w", help="lesion cohort: sequences, comma-separated (T1w, T2w, PDw, FLAIR)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mc", type=int, default=8, help="MC-dropout passes for the scoring check (0: skip)")
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 cases, 30 steps, 32^3 patches")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_test, args.steps, args.patch, args.mc = 6, 2, 30, (32, 32, 32), 2

    import torch

    from active_learning.native_grid import network_input, network_prelabel, network_target
    from active_learning.network import NetworkConfig
    from active_learning.training import (
        TrainingConfig,
        dice_per_label,
        mc_dropout_moments,
        predict_probabilities,
        train_segmentation,
    )
    from active_learning.uncertainty import uncertainty_from_moments

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.cohort == "lesion":
        channels = tuple(args.channels.split(","))
        ids, images, labels, spacing, lesions = lesion_cohort(args.n, first_seed=args.first_seed, channels=channels)
        n_lesions = [len(case) for case in lesions]
        values = (0, 1)
        spacings = [spacing] * len(ids)
    else:
        from bench_active_learning import simulated_cohort

        n = 12 if args.quick else 35
        ids, images, labels, spacings, values, _ = simulated_cohort(n, n_test=args.n_test)
        n_lesions = [None] * len(ids)
        channels = ("T1w",)
    log(f"{len(ids)} SIMULATED cases in {time.perf_counter() - t0:.0f} s")
    n_train = len(ids) - args.n_test
    config = NetworkConfig(
        labels=tuple(values),
        mode="patch",
        patch_shape=tuple(args.patch),
        input_roles=channels if len(channels) > 1 else (),
    )
    training = TrainingConfig(
        steps=args.steps,
        steps_per_scan=0,
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        flip_axes=(0,),
        seed=0,
    )
    t1 = time.perf_counter()
    inputs = [network_input(im, config=config, spacing=sp) for im, sp in zip(images, spacings, strict=True)]
    targets = [network_target(lab, geo, config=config) for lab, (_, geo) in zip(labels, inputs, strict=True)]
    prep_s = time.perf_counter() - t1
    log(f"prepared in {prep_s:.0f} s; native shapes {sorted({v.shape for v, _ in inputs})[:3]}")
    result = train_segmentation(
        [v for v, _ in inputs[:n_train]],
        targets[:n_train],
        config=config,
        training=training,
        callback=lambda f, m: log(m) if round(f * 20) % 5 == 0 else None,
    )
    log(f"trained {len(result.losses)} steps on {n_train} cases in {result.seconds:.0f} s")

    rows = []
    counts = {"found": 0, "missed": 0, "false_positive": 0}
    pooled = [0, 0]
    for i in range(n_train, len(ids)):
        volume, geometry = inputs[i]
        t2 = time.perf_counter()
        probabilities = predict_probabilities(result.model, volume, config=config)
        prelabel = network_prelabel(probabilities, geometry, config=config)
        predict_s = time.perf_counter() - t2
        truth = labels[i]
        dice = dice_per_label(prelabel, truth, labels=values[1:])
        row = {"id": ids[i], "dice": dice, "predict_s": predict_s, "n_lesions": n_lesions[i]}
        lesion_value = values[-1]
        lesion_truth, lesion_pred = truth == lesion_value, prelabel == lesion_value
        pooled[0] += int((lesion_truth & lesion_pred).sum())
        pooled[1] += int(lesion_truth.sum() + lesion_pred.sum())
        detection = lesion_detection(lesion_pred, lesion_truth, spacings[i], min_radius_mm=DETECT_RADIUS_MM)
        row["detection"] = detection
        for key in counts:
            counts[key] += detection[key]
        if args.mc:
            t3 = time.perf_counter()
            mean, aleatoric = mc_dropout_moments(result.model, volume, n_samples=args.mc, seed=i, config=config)
            region = uncertainty_from_moments(mean, aleatoric, margin=3)
            top = uncertainty_from_moments(mean, aleatoric, margin=3, top_k=args.top_k)
            row["mc_s"] = time.perf_counter() - t3
            row["uncertainty"] = {
                "entropy": region.entropy,
                "bald": region.bald,
                "entropy_top_k": top.entropy,
                "bald_top_k": top.bald,
            }
        rows.append(row)
        log(f"{ids[i]}: Dice { ({k: round(v, 3) for k, v in dice.items()}) }, detection {detection}")

    per_label = {}
    for value in values[1:]:
        scores = [r["dice"][value] for r in rows if np.isfinite(r["dice"][value])]
        per_label[str(value)] = float(np.mean(scores)) if scores else float("nan")
    summary = {
        "cohort": args.cohort,
        "first_seed": args.first_seed,
        "n_train": n_train,
        "n_test": args.n_test,
        "test_ids": ids[n_train:],
        "recipe": {"network": config.to_dict(), "training": training.to_dict()},
        "train_s": result.seconds,
        "prep_s": prep_s,
        "steps": len(result.losses),
        "dice_per_label": per_label,
        "lesion_dice_pooled": 2 * pooled[0] / pooled[1] if pooled[1] else float("nan"),
        "detection": {**counts, **f1(counts["found"], counts["missed"], counts["false_positive"])},
        "false_positive_lesion_free": sum(r["detection"]["predicted"] for r in rows if r["n_lesions"] == 0),
        "predict_s_median": float(np.median([r["predict_s"] for r in rows])),
        "rows": rows,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
    }
    if args.mc:
        error = [1.0 - np.nanmean(list(r["dice"].values())) for r in rows]
        summary["mc_s_median"] = float(np.median([r["mc_s"] for r in rows]))
        summary["spearman_uncertainty_vs_error"] = {
            key: spearman([r["uncertainty"][key] for r in rows], error)
            for key in ("entropy", "bald", "entropy_top_k", "bald_top_k")
        }
    log(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "recipe", "test_ids")}, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
