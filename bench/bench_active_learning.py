"""Active-learning benchmark: Dice against labelled scans for random, entropy and BALD.

Data: by default a SIMULATED cohort: ``simulation.simulate_subject`` deforms
the MNI152 2009a template (2 mm) with smooth random deformations, contrast, bias and
noise changes and 0-4 synthetic white-matter lesions of varied size and contrast
(labels 1 CSF, 2 grey matter, 3 white matter, 4 lesion). Nothing real and nothing
downloaded. ``--cohort multisite`` (default) draws the pool mostly from one research
site (T1w) and 2 scans each from two small clinical sites (tilted heads with thick
slices; T2w/FLAIR/PDw-like contrast), with a site-balanced test set (see ``SITES``);
``--cohort homogeneous`` makes every subject research-T1w-like. ``--nnunet-dir PATH`` runs on
any nnU-Net raw dataset folder instead
(``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, optional
``dataset.json`` with v2 ``{"name": value}`` or v1/MSD ``{"value": "name"}`` labels;
MSD's ``imagesTr/<case>.nii.gz`` is accepted too; first channel only). Label values
found in the label maps but missing from ``dataset.json`` stop the run with a message.

Protocol (ALGORITHMS.md section 3):

* The cohort is split once into a fixed test set (``--n-test`` scans, never labelled)
  and a pool. Every scan is mapped once to the working grid
  (``active_learning.working_grid.to_working``).
* For each seed, a starting set of ``schedule[0]`` pool scans is drawn at random; all
  strategies start from that same set and the same round-0 model. Each round adds
  scans up to the next count of ``--schedule``, chosen by the strategy among the
  unlabelled pool, and retrains FROM SCRATCH (same training seed for every strategy,
  so data are the only difference). ``random`` ranks by seeded random scores;
  ``entropy`` and ``bald`` by MC-dropout scores (``--mc-samples`` passes) averaged
  over the predicted foreground dilated by ``--margin`` voxels.
* Training uses the product's recipe (``active_learning.training.TrainingConfig``
  defaults: steps grow with the labelled scans, loss-prioritised scan sampling) unless
  ``--steps``, ``--steps-per-scan``, ``--max-steps`` or ``--scan-sampling`` say otherwise.
* A full-data model (whole pool) per seed gives the reference Dice; with loss sampling a
  second one with uniform sampling is the sampler's control.
* Dice: per test scan, the mean over foreground labels present in the truth or the
  prediction, then the mean over test scans. Primary: on each scan's ORIGINAL grid
  (the pre-label a rater would see); also on the working grid.
* Reported: Dice vs labelled scans (mean +- SD over seeds), the normalised area under
  that curve (trapezoids over the labelled fraction of the pool, divided by the
  fraction range: a mean Dice over the schedule) with a paired bootstrap 95 % CI of
  its difference from random (resampling seeds), and the labelled scans needed to
  reach 95 % of the full-data Dice (mean curve, and per seed).

Outputs: a JSON with every number (``--json``), a learning-curve PNG (``--png``) and a
Markdown table on stdout. ``--resume`` reuses the seeds already in the JSON.

Usage::

    .venv/bin/python bench/bench_active_learning.py                 # full run, 5 seeds (~40 min on 2 cores)
    .venv/bin/python bench/bench_active_learning.py --quick         # smoke test, minutes
    .venv/bin/python bench/bench_active_learning.py --nnunet-dir /data/Task04_Hippocampus \\
        --working-shape 32,48,32 --n-test 50 --schedule 5,10,20,40,80
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from active_learning import network, training, uncertainty, working_grid

ROOT = Path(__file__).resolve().parents[1]
SPLIT_SEED = 12345


# --------------------------------------------------------------------------------------
# Cohorts
# --------------------------------------------------------------------------------------


# The multi-site cohort: (site, scans in the pool, share of the test set). The pool is
# dominated by one research site; two small clinical sites have scans unlike it. The
# test set is site-balanced (every site weighs about the same), as multi-site studies
# report, because a ground truth is built to serve every site's scans.
SITES = (
    ("research T1w", None, 0.4),
    ("clinical T1w, tilted 20-35 deg, 6 mm slices", 2, 0.3),
    ("clinical T2w/FLAIR/PDw-like", 2, 0.3),
)


def _site_variation(site: int, k: int, rng) -> dict:
    """simulate_subject keyword arguments of the k-th scan of a site."""
    if site == 1:
        return {"tilt_deg": float(rng.uniform(20, 35)), "slice_thickness_mm": 6.0}
    if site == 2:
        return {"contrast": ("T2w", "FLAIR", "PDw")[k % 3]}
    return {}


def simulated_cohort(n: int, *, n_test: int, multisite: bool = True, resolution: int = 2, first_seed: int = 1000):
    """SIMULATED subjects from the MNI152 template.

    Returns (ids, images, labels, spacings, label values, sites), pool first, then the
    ``n_test`` test scans. ``multisite=False`` gives the homogeneous cohort (every subject
    a research-T1w-like deformation of the template).
    """
    import simulation as sim

    anatomy = sim.mni152_anatomy(resolution=resolution)
    n_pool = n - n_test
    if multisite:
        pool_counts = [n_pool - sum(c for _, c, _ in SITES[1:])] + [c for _, c, _ in SITES[1:]]
        test_counts = [round(share * n_test) for _, _, share in SITES[1:]]
        test_counts = [n_test - sum(test_counts), *test_counts]
        if min(pool_counts) < 1 or min(test_counts) < 1:
            raise SystemExit(f"--n-scans {n} / --n-test {n_test}: too few scans for {len(SITES)} sites")
    else:
        pool_counts, test_counts = [n_pool], [n_test]
    plan = []
    for counts in (pool_counts, test_counts):
        for site, count in enumerate(counts):
            plan += [(site, k) for k in range(count)]
    if multisite:
        # Shuffle the pool so that neither its order nor the ids reveal the site (the
        # homogeneous cohort keeps the first session's order, so its run is reproducible).
        rng = np.random.default_rng([SPLIT_SEED, 7])
        plan = [plan[i] for i in rng.permutation(n_pool)] + plan[n_pool:]
    ids, images, labels, spacings, sites = [], [], [], [], []
    for i, (site, k) in enumerate(plan):
        seed = first_seed + i
        variation = _site_variation(site, k, np.random.default_rng([seed, 99])) if multisite else {}
        subject = sim.simulate_subject(anatomy, seed=seed, **variation)
        ids.append(f"sim{seed}")
        images.append(subject.image)
        labels.append(subject.labels)
        spacings.append(anatomy.spacing)
        sites.append(SITES[site][0] if multisite else "homogeneous")
    return ids, images, labels, spacings, tuple(sorted(sim.LABELS)), sites


def nnunet_cohort(folder: Path, *, limit: int | None = None):
    """An nnU-Net raw dataset (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz)."""
    import nibabel as nib

    folder = Path(folder)
    label_dir, image_dir = folder / "labelsTr", folder / "imagesTr"
    if not label_dir.is_dir() or not image_dir.is_dir():
        raise SystemExit(f"--nnunet-dir: {folder} has no imagesTr/ and labelsTr/ folders")
    suffix = ".nii.gz"
    dataset = folder / "dataset.json"
    meta = json.loads(dataset.read_text()) if dataset.exists() else {}
    suffix = meta.get("file_ending", suffix)
    cases = sorted(p.name[: -len(suffix)] for p in label_dir.iterdir() if p.name.endswith(suffix))
    if limit:
        cases = cases[:limit]
    if not cases:
        raise SystemExit(f"--nnunet-dir: no *{suffix} label files in {label_dir}")
    ids, images, labels, spacings = [], [], [], []
    for case in cases:
        image_path = image_dir / f"{case}_0000{suffix}"
        if not image_path.exists() and (image_dir / f"{case}{suffix}").exists():
            image_path = image_dir / f"{case}{suffix}"  # MSD (nnU-Net v1 task) layout
        if not image_path.exists():
            raise SystemExit(f"--nnunet-dir: {image_path} is missing")
        img = nib.as_closest_canonical(nib.load(image_path))
        lab = nib.as_closest_canonical(nib.load(label_dir / f"{case}{suffix}"))
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim == 4:
            data = data[..., 0]
        seg = np.rint(np.asarray(lab.dataobj)).astype(np.int64)
        if data.shape != seg.shape:
            raise SystemExit(f"--nnunet-dir: {case}: image {data.shape} vs labels {seg.shape}")
        if seg.size and (seg.min() < 0 or seg.max() > 255):
            raise SystemExit(f"--nnunet-dir: {case}: label values must lie in 0..255, got {seg.min()}..{seg.max()}")
        ids.append(case)
        images.append(data)
        labels.append(seg.astype(np.uint8))
        spacings.append(tuple(float(z) for z in img.header.get_zooms()[:3]))
    found = set().union(*(np.unique(s).tolist() for s in labels))
    if "labels" in meta and all(str(k).isdigit() for k in meta["labels"]):
        values = sorted(int(k) for k in meta["labels"])  # v1 / MSD: {"0": "background", ...}
    elif "labels" in meta:
        values = sorted(int(v) for v in meta["labels"].values() if not isinstance(v, list))
    else:
        values = sorted(found | {0})
    if found - set(values):
        raise SystemExit(
            f"--nnunet-dir: labelsTr holds label values {sorted(found - set(values))} "
            f"that dataset.json does not name (it names {values})"
        )
    return ids, images, labels, spacings, tuple(values), ["all"] * len(ids)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def scan_dice(prediction, truth, values):
    """Per-label Dice and the mean over labels present in either map (NaN if none)."""
    per_label = training.dice_per_label(prediction, truth, labels=values)
    present = [v for v in per_label.values() if not math.isnan(v)]
    return per_label, (float(np.mean(present)) if present else float("nan"))


def evaluate(model, config, test):
    """Mean Dice over test scans on the original grid and on the working grid."""
    values = config.labels[1:]
    original, working, per_label = [], [], {v: [] for v in values}
    by_site = {}
    for item in test:
        probs = training.predict_probabilities(model, item["work"])
        labels = working_grid.probabilities_to_labels(probs, item["geometry"], config=config)
        scores, mean = scan_dice(labels, item["labels"], values)
        original.append(mean)
        by_site.setdefault(item["site"], []).append(mean)
        for v, s in scores.items():
            if not math.isnan(s):
                per_label[v].append(s)
        _, mean_w = scan_dice(probs.argmax(axis=0), item["target"], range(1, config.n_classes))
        working.append(mean_w)
    return {
        "dice": float(np.nanmean(original)),
        "dice_working": float(np.nanmean(working)),
        "dice_per_label": {str(v): (float(np.mean(s)) if s else None) for v, s in per_label.items()},
        "dice_per_site": {site: float(np.nanmean(d)) for site, d in by_site.items()},
    }


# --------------------------------------------------------------------------------------
# One seed
# --------------------------------------------------------------------------------------


def log(message):
    print(time.strftime("%H:%M:%S"), message, flush=True)


def run_seed(seed, pool, test, config, args):
    schedule = args.schedule
    rng = np.random.default_rng([SPLIT_SEED, seed])
    initial = sorted(rng.choice(len(pool), size=schedule[0], replace=False).tolist())
    hyper = training.TrainingConfig(
        steps=args.steps,
        steps_per_scan=args.steps_per_scan,
        max_steps=max(args.max_steps, args.steps),
        scan_sampling=args.scan_sampling,
        batch_size=args.batch_size,
        patch_shape=None,
        learning_rate=args.learning_rate,
        seed=seed,
        flip_axes=tuple(args.flip_axes),
    )

    def fit(indices, recipe=hyper):
        return training.train_segmentation(
            [pool[i]["work"] for i in indices],
            [pool[i]["target"] for i in indices],
            config=config,
            training=recipe,
        )

    def score(model, candidates):
        t0 = time.perf_counter()
        scores = {}
        for i in candidates:
            s = training.score_scan(model, pool[i]["work"], n_samples=args.mc_samples, margin=args.margin, seed=i)
            scores[i] = s
        return scores, time.perf_counter() - t0

    out = {"seed": seed, "initial": [pool[i]["id"] for i in initial], "strategies": {}, "timing": {}}
    t0 = time.perf_counter()
    base = fit(initial)
    base_eval = evaluate(base.model, config, test)
    log(f"seed {seed} round 0 n={len(initial)} dice {base_eval['dice']:.4f} (train {base.seconds:.0f} s)")
    train_seconds = [base.seconds]
    score_seconds = []
    base_scores = None
    for strategy in args.strategies:
        labelled = list(initial)
        model = base.model
        rounds = [{"n": len(labelled), **base_eval, "added": []}]
        for r, target in enumerate(schedule[1:], start=1):
            unlabelled = [i for i in range(len(pool)) if i not in labelled]
            k = target - len(labelled)
            if strategy == "random":
                values = uncertainty.random_scores(len(unlabelled), seed=seed * 1000 + r)
            else:
                if r == 1 and base_scores is not None:
                    scores = base_scores
                else:
                    scores, seconds = score(model, unlabelled)
                    score_seconds.append(seconds / max(len(unlabelled), 1))
                    if r == 1:
                        base_scores = scores
                values = np.array([scores[i].score(strategy) for i in unlabelled])
            chosen = [unlabelled[j] for j in uncertainty.rank_order(values)[:k]]
            labelled = labelled + chosen
            result = fit(labelled)
            train_seconds.append(result.seconds)
            model = result.model
            evaluation = evaluate(model, config, test)
            rounds.append({"n": len(labelled), **evaluation, "added": [pool[i]["id"] for i in chosen]})
            log(
                f"seed {seed} {strategy:8s} round {r} n={len(labelled)} "
                f"dice {evaluation['dice']:.4f} (train {result.seconds:.0f} s)"
            )
        out["strategies"][strategy] = rounds
    full = fit(list(range(len(pool))))
    train_seconds.append(full.seconds)
    out["full"] = {"n": len(pool), **evaluate(full.model, config, test)}
    log(f"seed {seed} full n={len(pool)} dice {out['full']['dice']:.4f} (train {full.seconds:.0f} s)")
    if hyper.scan_sampling != "uniform":
        # Control: the same full-data model with shuffled passes, to show what the
        # loss-prioritised sampler does to the reference.
        control = fit(list(range(len(pool))), dataclasses.replace(hyper, scan_sampling="uniform"))
        out["full_uniform_sampling"] = {"n": len(pool), **evaluate(control.model, config, test)}
        log(f"seed {seed} full, uniform sampling: dice {out['full_uniform_sampling']['dice']:.4f}")
    out["timing"] = {
        "seconds": time.perf_counter() - t0,
        "train_seconds_mean": float(np.mean(train_seconds)),
        "score_seconds_per_scan": float(np.mean(score_seconds)) if score_seconds else None,
    }
    return out


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------


def normalised_aulc(counts, dice, pool_size):
    """Area under Dice vs labelled fraction (trapezoids) divided by the fraction range."""
    x = np.asarray(counts, dtype=float) / pool_size
    y = np.asarray(dice, dtype=float)
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def first_reaching(counts, dice, threshold):
    for n, d in zip(counts, dice, strict=True):
        if d >= threshold:
            return int(n)
    return None


def _metric(record, metric):
    """``record[metric]``, or one label's Dice for ``metric = "label:<value>"`` (NaN if none)."""
    if metric.startswith("label:"):
        value = record["dice_per_label"][metric.split(":", 1)[1]]
        return np.nan if value is None else value
    if metric == "minority_sites":
        values = [v for site, v in record["dice_per_site"].items() if site != SITES[0][0]]
        return float(np.mean(values)) if values else np.nan
    return record[metric]


def analyse(results, strategies, pool_size, metric="dice", n_boot=10000):
    seeds = results["seeds"]
    counts = [r["n"] for r in seeds[0]["strategies"][strategies[0]]]
    curves = {s: np.array([[_metric(r, metric) for r in seed["strategies"][s]] for seed in seeds]) for s in strategies}
    full = np.array([_metric(seed["full"], metric) for seed in seeds])
    target = 0.95 * float(full.mean())
    aulc = {s: np.array([normalised_aulc(counts, c, pool_size) for c in curves[s]]) for s in strategies}
    rng = np.random.default_rng(0)
    boot_index = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    summary = {
        "counts": counts,
        "pool_size": pool_size,
        "full_mean": float(full.mean()),
        "full_sd": float(full.std(ddof=1)) if len(full) > 1 else 0.0,
        "target_95": target,
        "strategies": {},
    }
    for s in strategies:
        mean = curves[s].mean(axis=0)
        sd = curves[s].std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros_like(mean)
        diff = aulc[s] - aulc["random"] if "random" in aulc else None
        entry = {
            "mean": mean.tolist(),
            "sd": sd.tolist(),
            "aulc_mean": float(aulc[s].mean()),
            "aulc_sd": float(aulc[s].std(ddof=1)) if len(seeds) > 1 else 0.0,
            "scans_to_95_mean_curve": first_reaching(counts, mean, target),
            "scans_to_95_per_seed": [first_reaching(counts, c, 0.95 * f) for c, f in zip(curves[s], full, strict=True)],
        }
        if diff is not None and s != "random":
            boots = diff[boot_index].mean(axis=1)
            entry["aulc_diff_vs_random"] = float(diff.mean())
            entry["aulc_diff_ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
            entry["aulc_wins_vs_random"] = int((diff > 0).sum())
        summary["strategies"][s] = entry
    return summary


def markdown(summary, strategies, metric_name):
    counts, pool = summary["counts"], summary["pool_size"]
    title = (
        f"Dice ({metric_name}) vs labelled scans, mean ± SD over seeds; pool = {pool} "
        f"scans; full-data Dice {summary['full_mean']:.4f} ± {summary['full_sd']:.4f}, "
        f"95 % of it = {summary['target_95']:.4f}."
    )
    lines = [title, ""]
    head = "| strategy | " + " | ".join(f"{n} ({100 * n / pool:.0f} %)" for n in counts)
    head += " | norm. AULC | ΔAULC vs random [95 % CI] | scans to 95 % (mean curve) | per seed |"
    lines += [head, "|" + "---|" * (len(counts) + 5)]
    for s in strategies:
        e = summary["strategies"][s]
        cells = [f"{m:.4f} ± {sd:.4f}" for m, sd in zip(e["mean"], e["sd"], strict=True)]
        if "aulc_diff_vs_random" in e:
            lo, hi = e["aulc_diff_ci95"]
            delta = f"{e['aulc_diff_vs_random']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        else:
            delta = "—"
        reach = e["scans_to_95_mean_curve"]
        reach = f"{reach} ({100 * reach / pool:.0f} %)" if reach else f"not reached (> {counts[-1]})"
        per_seed = ", ".join(str(v) if v else "–" for v in e["scans_to_95_per_seed"])
        lines.append(
            f"| {s} | "
            + " | ".join(cells)
            + f" | {e['aulc_mean']:.4f} ± {e['aulc_sd']:.4f} | {delta} | {reach} | {per_seed} |"
        )
    return "\n".join(lines)


def plot(panels, strategies, path, title):
    """One learning-curve panel per (summary, y label) in ``panels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "random": "#7f7f7f",
        "entropy": "#0072B2",
        "bald": "#D55E00",
        "combined": "#009E73",
        "lesion_load": "#CC79A7",
        "diversity": "#E69F00",
        "entropy_random": "#56B4E9",
        "stratified": "#000000",
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (summary, ylabel) in zip(axes, panels, strict=True):
        counts = np.array(summary["counts"])
        pool = summary["pool_size"]
        for s in strategies:
            e = summary["strategies"][s]
            mean, sd = np.array(e["mean"]), np.array(e["sd"])
            ax.plot(counts, mean, "o-", color=colours.get(s), ms=4, label=f"{s} (AULC {e['aulc_mean']:.3f})")
            ax.fill_between(counts, mean - sd, mean + sd, color=colours.get(s), alpha=0.15)
        ax.axhline(summary["full_mean"], color="black", lw=1, label=f"full data ({pool} scans)")
        ax.errorbar([pool], [summary["full_mean"]], yerr=[summary["full_sd"]], fmt="ks", ms=4)
        ax.axhline(summary["target_95"], color="black", lw=1, ls="--", label="95 % of full data")
        for frac in (0.4, 0.6):
            ax.axvline(frac * pool, color="#aaaaaa", lw=0.8, ls=":")
        ax.set_xticks([*list(counts), pool])
        ax.set_xticklabels([f"{n}\n{100 * n / pool:.0f}%" for n in [*list(counts), pool]], fontsize=8)
        ax.set_xlabel("labelled scans (share of the pool)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(results, strategies, pool_size, png, title):
    """Analyse ``results``, write the PNG, print the tables; returns the summaries."""
    summaries = {
        "original": analyse(results, strategies, pool_size),
        "working": analyse(results, strategies, pool_size, metric="dice_working"),
    }
    full_labels = {}
    for value in results["seeds"][0]["full"]["dice_per_label"]:
        scores = [s["full"]["dice_per_label"][value] for s in results["seeds"]]
        scores = [v for v in scores if v is not None]
        full_labels[value] = float(np.mean(scores)) if scores else float("nan")
    for value in full_labels:
        summaries[f"label:{value}"] = analyse(results, strategies, pool_size, metric=f"label:{value}")
    finite = {k: v for k, v in full_labels.items() if math.isfinite(v)}
    hardest = min(finite, key=finite.get) if finite else None
    panels = [
        (summaries["original"], "test Dice, original grid (mean over labels)"),
        (summaries["working"], "test Dice, working grid (mean over labels)"),
    ]
    multisite = len(results["seeds"][0]["full"].get("dice_per_site", {})) > 1
    if multisite:
        summaries["minority_sites"] = analyse(results, strategies, pool_size, metric="minority_sites")
        panels.append((summaries["minority_sites"], "test Dice, the two small sites' scans"))
    elif hardest is not None:
        panels.append((summaries[f"label:{hardest}"], f"test Dice of label {hardest} (hardest), original grid"))
    plot(panels, strategies, png, title)
    print()
    print(markdown(summaries["original"], strategies, "original grid, mean over labels"))
    print()
    print(markdown(summaries["working"], strategies, "working grid, mean over labels"))
    for value in full_labels:
        print()
        print(markdown(summaries[f"label:{value}"], strategies, f"label {value}, original grid"))
    if multisite:
        print()
        print(markdown(summaries["minority_sites"], strategies, "the two small sites' test scans"))
        print()
        print(picks_table(results, strategies))
    print()
    print("Full-data Dice per label (original grid):", {k: round(v, 4) for k, v in full_labels.items()})
    controls = [s["full_uniform_sampling"] for s in results["seeds"] if "full_uniform_sampling" in s]
    if controls:
        sampled = [s["full"] for s in results["seeds"] if "full_uniform_sampling" in s]
        print()
        print(sampling_table(sampled, controls))
    return summaries, full_labels


def sampling_table(sampled, controls):
    """The full-data model with loss-prioritised vs uniform scan sampling (same steps)."""
    sites = list(sampled[0].get("dice_per_site", {}))
    lines = [
        "Full-data model, loss-prioritised vs uniform scan sampling (mean ± SD over "
        f"{len(sampled)} seeds, original grid):",
        "",
        "| scan sampling | all test scans | " + " | ".join(sites) + " |",
        "|" + "---|" * (len(sites) + 2),
    ]
    for name, runs in (("loss (the recipe)", sampled), ("uniform (control)", controls)):
        cells = [np.array([r["dice"] for r in runs])]
        cells += [np.array([r["dice_per_site"][site] for r in runs]) for site in sites]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c.mean():.4f} ± {c.std(ddof=1) if len(c) > 1 else 0:.4f}" for c in cells)
            + " |"
        )
    return "\n".join(lines)


def picks_table(results, strategies):
    """Scans from the small sites among the labelled ones, mean over seeds, per round."""
    sites = results["pool_sites"]
    seeds = results["seeds"]
    counts = [r["n"] for r in seeds[0]["strategies"][strategies[0]]]
    minority = sum(1 for site in sites.values() if site != SITES[0][0])
    lines = [
        f"Small-site scans among the labelled ones (mean over seeds; the pool has {minority}):",
        "",
        "| strategy | " + " | ".join(str(n) for n in counts) + " |",
        "|" + "---|" * (len(counts) + 1),
    ]
    for s in strategies:
        cells = []
        for r in range(len(counts)):
            per_seed = []
            for seed in seeds:
                labelled = list(seed["initial"])
                for rnd in seed["strategies"][s][1 : r + 1]:
                    labelled += rnd["added"]
                per_seed.append(sum(sites[i] != SITES[0][0] for i in labelled))
            cells.append(f"{np.mean(per_seed):.1f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _ints(text):
    return [int(v) for v in text.split(",") if v != ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nnunet-dir", type=Path, help="nnU-Net raw dataset folder instead of the simulated cohort")
    parser.add_argument("--n-scans", type=int, default=35, help="simulated cohort size (default 35)")
    parser.add_argument(
        "--cohort",
        choices=("multisite", "homogeneous"),
        default="multisite",
        help="simulated cohort: three sites, one dominant (default), or one homogeneous site",
    )
    parser.add_argument("--n-test", type=int, default=10, help="fixed test scans (default 10)")
    parser.add_argument("--limit", type=int, help="nnU-Net: use only the first N cases")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--schedule", type=_ints, default=[2, 5, 10, 15], help="labelled scans after each round (default 2,5,10,15)"
    )
    parser.add_argument("--strategies", default="random,entropy,bald")
    parser.add_argument("--working-shape", type=_ints, default=[48, 56, 48])
    parser.add_argument("--channels", type=_ints, default=[16, 32, 64, 128])
    parser.add_argument("--res-units", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=0.2)
    recipe = training.TrainingConfig()  # the product's recipe unless told otherwise
    parser.add_argument("--steps", type=int, default=recipe.steps, help="fewest steps per model")
    parser.add_argument(
        "--steps-per-scan", type=int, default=recipe.steps_per_scan, help="steps per labelled scan (0: always --steps)"
    )
    parser.add_argument("--max-steps", type=int, default=recipe.max_steps)
    parser.add_argument("--scan-sampling", choices=training.SCAN_SAMPLING, default=recipe.scan_sampling)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--learning-rate", type=float, default=recipe.learning_rate)
    parser.add_argument(
        "--flip-axes",
        type=_ints,
        default=None,
        help="mirror axes during training (default 0 for the simulated brains, none for --nnunet-dir)",
    )
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--margin", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/out/active_learning.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs/learning_curve.png")
    parser.add_argument("--resume", action="store_true", help="reuse finished seeds in --json")
    parser.add_argument(
        "--analyse-only", action="store_true", help="no training: redo the tables and the PNG from --json"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 12 scans, 2 seeds, 20-40 steps, 4 MC samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_scans, args.n_test, args.seeds, args.steps, args.mc_samples = 12, 4, 2, 20, 4
        args.steps_per_scan, args.max_steps = 2, 40
        args.schedule = [2, 4, 6]
        if args.json == parser.get_default("json"):
            args.json = ROOT / "bench/out/active_learning_quick.json"
        if args.png == parser.get_default("png"):
            args.png = ROOT / "bench/out/learning_curve_quick.png"
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in args.strategies:
        if s not in ("random", "entropy", "bald"):
            parser.error(f"--strategies: unknown {s!r} (random, entropy, bald)")
    if "random" not in args.strategies:
        parser.error("--strategies: random is the baseline and must be included")
    if args.schedule != sorted(set(args.schedule)) or args.schedule[0] < 1:
        parser.error("--schedule: expected increasing counts >= 1")
    if args.flip_axes is None:
        args.flip_axes = [] if args.nnunet_dir else [0]
    torch.set_num_threads(args.threads)

    if args.analyse_only:
        results = json.loads(args.json.read_text())
        strategies = results["settings"]["strategies"]
        pool_size = results["summary"]["pool_size"]
        summaries, full_labels = report(
            results, strategies, pool_size, args.png, results.get("plot_title", results.get("source", ""))
        )
        results.update(
            {
                "summary": summaries["original"],
                "summary_working_grid": summaries["working"],
                "summary_per_label": {k: v for k, v in summaries.items() if k.startswith("label:")},
                "summary_minority_sites": summaries.get("minority_sites"),
                "full_data_dice_per_label": full_labels,
            }
        )
        args.json.write_text(json.dumps(results, indent=1))
        print(f"PNG {args.png}; JSON {args.json} updated")
        return

    t_start = time.perf_counter()
    if args.nnunet_dir:
        ids, images, labels, spacings, values, sites = nnunet_cohort(args.nnunet_dir, limit=args.limit)
        source = f"nnU-Net raw folder {args.nnunet_dir}"
    else:
        ids, images, labels, spacings, values, sites = simulated_cohort(
            args.n_scans, n_test=args.n_test, multisite=args.cohort == "multisite"
        )
        source = (
            f"SIMULATED {args.cohort} cohort: {args.n_scans} subjects from the MNI152 "
            "2009a template at 2 mm (simulation, seeds 1000..)"
        )
    if args.n_test >= len(ids) or len(ids) - args.n_test < args.schedule[-1]:
        parser.error(
            f"cohort of {len(ids)} scans too small for --n-test {args.n_test} and --schedule up to {args.schedule[-1]}"
        )
    config = network.NetworkConfig(
        labels=values,
        working_shape=tuple(args.working_shape),
        channels=tuple(args.channels),
        strides=(2,) * (len(args.channels) - 1),
        num_res_units=args.res_units,
        dropout=args.dropout,
    )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    if not args.nnunet_dir:
        order = np.arange(len(ids))  # simulated_cohort puts the pool first, the test scans last
    items = []
    t0 = time.perf_counter()
    for i in order:
        work, geometry = working_grid.to_working(images[i], config=config, spacing=spacings[i])
        items.append(
            {
                "id": ids[i],
                "site": sites[i],
                "work": work,
                "geometry": geometry,
                "labels": labels[i],
                "target": working_grid.labels_to_working(labels[i], geometry, config=config),
            }
        )
    prep_seconds = time.perf_counter() - t0
    del images
    pool, test = items[: len(items) - args.n_test], items[len(items) - args.n_test :]
    log(
        f"{source}: {len(pool)} pool + {len(test)} test scans, working grid "
        f"{config.working_shape} at ~{items[0]['geometry'].working_spacing_mm:.2f} mm, "
        f"prep {prep_seconds:.1f} s, {torch.get_num_threads()} threads"
    )

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results = {
        "settings": settings,
        "seeds": [],
        "pool_sites": {item["id"]: item["site"] for item in pool},
        "test_sites": {item["id"]: item["site"] for item in test},
    }
    if args.resume and args.json.exists():
        previous = json.loads(args.json.read_text())
        if previous.get("settings", {}).get("schedule") == args.schedule:
            results["seeds"] = previous.get("seeds", [])
            log(f"resuming: {len(results['seeds'])} seeds already done")
    done = {s["seed"] for s in results["seeds"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        if seed in done:
            continue
        results["seeds"].append(run_seed(seed, pool, test, config, args))
        results["seeds"].sort(key=lambda s: s["seed"])
        args.json.write_text(json.dumps(results, indent=1))

    title = (
        f"{f'SIMULATED MNI152 {args.cohort} cohort' if not args.nnunet_dir else args.nnunet_dir.name}: "
        f"{len(results['seeds'])} seeds, pool {len(pool)}, test {len(test)}"
    )
    args.png.parent.mkdir(parents=True, exist_ok=True)
    summaries, full_labels = report(results, args.strategies, len(pool), args.png, title)
    results.update(
        {
            "source": source,
            "plot_title": title,
            "summary": summaries["original"],
            "summary_working_grid": summaries["working"],
            "summary_per_label": {k: v for k, v in summaries.items() if k.startswith("label:")},
            "summary_minority_sites": summaries.get("minority_sites"),
            "full_data_dice_per_label": full_labels,
            "network": config.to_dict(),
            "working_spacing_mm": items[0]["geometry"].working_spacing_mm,
            "wall_seconds": time.perf_counter() - t_start,
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "monai": metadata.version("monai"),
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
            },
        }
    )
    args.json.write_text(json.dumps(results, indent=1))
    print(f"Total wall time {results['wall_seconds'] / 60:.1f} min; JSON {args.json}; PNG {args.png}")


if __name__ == "__main__":
    main()
