"""Active learning on a SIMULATED lesion cohort with the patch model: random vs uncertainty vs lesion-aware.

Data: :func:`simulation.simulate_lesion_case` at 2 mm (binary lesion masks; about 15 % of cases
without lesions; lesions 2.5-7.5 mm equivalent radius, 70 % T1-hypointense, 30 % hyperintense),
one or more co-registered sequences (``--channels``; on FLAIR every lesion is bright). Nothing
here is a real patient.

Protocol (as ``bench_active_learning.py``, ALGORITHMS.md section 3), per seed:

* The cohort is split once: the last ``--n-test`` cases are the test set, never labelled; the
  rest is the pool. Every case is mapped once to the patch network's grid (``network_input``).
* A starting set of ``schedule[0]`` pool cases is drawn at random (per seed); every strategy
  starts from it and from the same round-0 model. Each round adds cases up to the next count
  of ``--schedule``, chosen by the strategy among the unlabelled pool, and retrains FROM
  SCRATCH with the same training seed, so the data are the only difference.
* Strategies: ``random`` (seeded scores); ``entropy`` and ``bald`` (MC-dropout, ``--mc``
  passes over the sliding windows, the product's score: mean of the top 200 voxels of the
  predicted foreground dilated by 3 voxels); ``lesion_load`` (the model's expected lesion
  volume, the sum of its mean lesion probability: the cases that hold most lesion to learn
  from, as the model sees them); ``diversity`` (greedy k-centre on cheap image features with
  the labelled cases as centres, the product's cold-start order, no model); ``entropy_random``
  (half of each batch by entropy, the rest at random: uncertain cases without giving up the
  typical ones, lesion-free cases included); ``stratified`` (the unlabelled cases cut into as
  many strata of the model's expected lesion volume as the batch has cases, equal counts, and
  the most uncertain case (entropy) of each: the batch keeps the pool's spread of lesion load,
  lesion-free-looking cases included, and uncertainty chooses within it).
* Training: the product's patch recipe (``TrainingConfig``: Dice + CE, foreground
  oversampling, MONAI intensity augmentation, loss-prioritised case sampling) with the step
  count ``--steps-per-scan`` x labelled cases, at least ``--min-steps``, at most
  ``--max-steps``, fixed (no time budget: reproducible). A full-data model (whole pool, same
  rule) per seed is the reference.
* Metric: lesion Dice per test case on its ORIGINAL grid, mean over test cases with a lesion in
  truth or prediction (the primary); lesion-wise detection F1 for lesions >= 3 mm radius.
* Reported: Dice vs labelled cases (mean +- SD over seeds), the normalised area under that
  curve with a paired bootstrap 95 % CI of its difference from random (resampling seeds), the
  cases needed to reach 95 % of the full-data Dice, and what each strategy picked (lesions and
  their T1 contrast in the cases it added).

Run (each seed is independent: split seeds over processes, then ``--analyse-only`` merges)::

    .venv/bin/python bench/bench_lesion_al.py --seeds 0,1 --json bench/out/lesion_al_a.json
    .venv/bin/python bench/bench_lesion_al.py --seeds 2,3,4 --json bench/out/lesion_al_b.json
    .venv/bin/python bench/bench_lesion_al.py --analyse-only --merge bench/out/lesion_al_a.json \\
        bench/out/lesion_al_b.json --png docs/lesion_al_curves.png
    .venv/bin/python bench/bench_lesion_al.py --quick    # smoke test, about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_active_learning import analyse, markdown, plot
from bench_lesion_model import DETECT_RADIUS_MM, f1, lesion_cohort, lesion_detection, log

STRATEGIES = ("random", "entropy", "bald", "lesion_load", "diversity", "entropy_random", "stratified")
SPLIT_SEED = 19


def prepare(args):
    """The cohort on the network's grid: pool and test lists of dicts."""
    from active_learning.native_grid import network_input, network_target
    from active_learning.network import NetworkConfig

    channels = tuple(args.channels.split(","))
    ids, images, labels, spacing, lesions = lesion_cohort(args.n, first_seed=args.first_seed, channels=channels)
    config = NetworkConfig(
        labels=(0, 1),
        mode="patch",
        patch_shape=tuple(args.patch),
        input_roles=channels if len(channels) > 1 else (),
    )
    cases = []
    for case_id, image, label, case_lesions in zip(ids, images, labels, lesions, strict=True):
        volume, geometry = network_input(image, config=config, spacing=spacing)
        cases.append(
            {
                "id": case_id,
                "volume": volume,
                "geometry": geometry,
                "target": network_target(label, geometry, config=config),
                "labels": label,
                "spacing": spacing,
                "lesions": _lesion_facts(case_lesions),
            }
        )
    n_pool = len(cases) - args.n_test
    return cases[:n_pool], cases[n_pool:], config


def _lesion_facts(lesions) -> list:
    """A case's lesions: T1 contrast (ratio to white matter) and equivalent radius (mm)."""
    return [
        {"contrast": float(lesion["contrast"]), "radius_mm": float(np.cbrt(np.prod(lesion["semi_axes_mm"])))}
        for lesion in lesions
    ]


def evaluate(model, config, test) -> dict:
    from active_learning.native_grid import network_prelabel
    from active_learning.training import dice_per_label, predict_probabilities

    dices, counts = [], {"found": 0, "missed": 0, "false_positive": 0}
    for item in test:
        prelabel = network_prelabel(
            predict_probabilities(model, item["volume"], config=config), item["geometry"], config=config
        )
        dices.append(dice_per_label(prelabel, item["labels"], labels=(1,))[1])
        detection = lesion_detection(
            prelabel == 1, item["labels"] == 1, item["spacing"], min_radius_mm=DETECT_RADIUS_MM
        )
        for key in counts:
            counts[key] += detection[key]
    dice = float(np.nanmean(dices)) if np.isfinite(dices).any() else float("nan")
    detection = {**counts, **f1(counts["found"], counts["missed"], counts["false_positive"])}
    return {
        "dice": dice,
        "f1": detection["f1"],
        "dice_per_label": {"1": dice},
        "dice_per_site": {},
        "dice_per_case": [None if math.isnan(d) else d for d in dices],
        "detection": detection,
    }


def scores_for(strategy, model, config, pool, unlabelled, labelled, args, *, seed, round_index, cache):
    """Higher = label first, for each unlabelled case (``cache`` keeps one MC pass per model and case);
    for ``stratified`` one row (entropy, lesion load) per case."""
    from active_learning import uncertainty

    if strategy == "random":
        return uncertainty.random_scores(len(unlabelled), seed=seed * 1000 + round_index)
    if strategy == "diversity":
        features = np.stack(
            [
                np.concatenate(
                    [
                        uncertainty.image_features(channel)
                        for channel in c["volume"].reshape(-1, *c["volume"].shape[-3:])
                    ]
                )
                for c in pool
            ]
        )
        order = uncertainty.diversity_order(features, selected=labelled)
        rank = {int(i): len(order) - position for position, i in enumerate(order)}
        return np.array([rank[i] for i in unlabelled], dtype=float)
    from active_learning.training import mc_dropout_moments

    keys = {"entropy_random": ("entropy",), "stratified": ("entropy", "lesion_load")}.get(strategy, (strategy,))
    values = []
    for i in unlabelled:
        if i not in cache:
            mean, expected = mc_dropout_moments(model, pool[i]["volume"], n_samples=args.mc, seed=i, config=config)
            summary = uncertainty.uncertainty_from_moments(mean, expected, margin=3, top_k=args.top_k)
            cache[i] = {"entropy": summary.entropy, "bald": summary.bald, "lesion_load": float(mean[1].sum())}
        values.append([cache[i][key] for key in keys])
    values = np.array(values, dtype=float)
    return values if strategy == "stratified" else values[:, 0]


def choose(strategy, values, k, *, seed, round_index) -> list[int]:
    """Positions (in the unlabelled list) of the ``k`` cases to label: the top ``k`` of ``values``;
    for ``entropy_random`` the top half (rounded up) and a seeded random draw from the rest; for
    ``stratified`` (``values`` = rows of entropy, lesion load) the most uncertain case of each of
    ``k`` equal-count strata of lesion load (:func:`active_learning.uncertainty.stratified_order`)."""
    from active_learning import uncertainty

    if strategy == "stratified":  # the product's order; the batch listed by stratum, as it was measured
        picks = uncertainty.stratified_order(values[:, 0], values[:, 1], n_strata=k)[:k]
        load_rank = np.argsort(np.argsort(values[:, 1], kind="stable"))
        return sorted((int(j) for j in picks), key=lambda j: load_rank[j])
    order = [int(j) for j in uncertainty.rank_order(values)]
    if strategy != "entropy_random":
        return order[:k]
    top = order[: (k + 1) // 2]
    rest = [j for j in range(len(values)) if j not in top]
    draw = uncertainty.random_scores(len(rest), seed=seed * 1000 + 500 + round_index)
    return top + [rest[j] for j in uncertainty.rank_order(draw)[: k - len(top)]]


def run_seed(seed, pool, test, config, args) -> dict:
    from active_learning.training import TrainingConfig, train_segmentation

    def recipe(n):
        steps = int(min(max(args.steps_per_scan * n, args.min_steps), args.max_steps))
        return TrainingConfig(
            steps=steps,
            steps_per_scan=0,
            max_steps=steps,
            batch_size=2,
            learning_rate=1e-2,
            flip_axes=(0,),
            seed=seed,
        )

    def fit(indices):
        result = train_segmentation(
            [pool[i]["volume"] for i in indices],
            [pool[i]["target"] for i in indices],
            config=config,
            training=recipe(len(indices)),
        )
        return result

    rng = np.random.default_rng([SPLIT_SEED, seed])
    initial = sorted(rng.choice(len(pool), size=args.schedule[0], replace=False).tolist())
    t0 = time.perf_counter()
    base = fit(initial)
    base_eval = evaluate(base.model, config, test)
    log(
        f"seed {seed} round 0 n={len(initial)} dice {base_eval['dice']:.4f} f1 {base_eval['f1']:.3f} "
        f"({base.seconds:.0f} s)"
    )
    out = {"seed": seed, "initial": [pool[i]["id"] for i in initial], "strategies": {}, "train_s": [base.seconds]}
    score_s = []
    base_cache: dict = {}
    for strategy in args.strategies:
        labelled, model, cache = list(initial), base.model, base_cache
        rounds = [{"n": len(labelled), **base_eval, "added": []}]
        for r, target in enumerate(args.schedule[1:], start=1):
            unlabelled = [i for i in range(len(pool)) if i not in labelled]
            t1 = time.perf_counter()
            values = scores_for(
                strategy, model, config, pool, unlabelled, labelled, args, seed=seed, round_index=r, cache=cache
            )
            score_s.append(time.perf_counter() - t1)
            chosen = [unlabelled[j] for j in choose(strategy, values, target - len(labelled), seed=seed, round_index=r)]
            labelled = labelled + chosen
            result = fit(labelled)
            out["train_s"].append(result.seconds)
            model, cache = result.model, {}
            evaluation = evaluate(model, config, test)
            rounds.append({"n": len(labelled), **evaluation, "added": [pool[i]["id"] for i in chosen]})
            log(
                f"seed {seed} {strategy:11s} round {r} n={len(labelled)} dice {evaluation['dice']:.4f} "
                f"f1 {evaluation['f1']:.3f} ({result.seconds:.0f} s train)"
            )
        out["strategies"][strategy] = rounds
    if not args.no_full:
        full = fit(list(range(len(pool))))
        out["train_s"].append(full.seconds)
        out["full"] = {"n": len(pool), **evaluate(full.model, config, test)}
        log(f"seed {seed} full n={len(pool)} dice {out['full']['dice']:.4f} f1 {out['full']['f1']:.3f}")
    out["seconds"] = time.perf_counter() - t0
    out["score_s_per_round"] = float(np.mean(score_s)) if score_s else None
    return out


def merge_seeds(records: list[dict]) -> list[dict]:
    """One record per seed: runs of the same seed (other strategies, or without the full-data model)
    are joined; they must share the starting cases and the round-0 model's figures (the training
    is deterministic for a seed and thread count), else the merge stops."""
    merged: dict[int, dict] = {}
    for record in records:
        seed = record["seed"]
        if seed not in merged:
            merged[seed] = {**record, "strategies": dict(record["strategies"])}
            continue
        into = merged[seed]
        first = next(iter(record["strategies"].values()))[0]
        known = next(iter(into["strategies"].values()))[0]
        if record["initial"] != into["initial"] or abs(first["dice"] - known["dice"]) > 1e-6:
            raise SystemExit(f"seed {seed}: the runs to merge start differently (cases or round-0 model)")
        into["strategies"].update(record["strategies"])
        if "full" not in into and "full" in record:
            into["full"] = record["full"]
    return [merged[seed] for seed in sorted(merged)]


def picks_table(results, strategies) -> str:
    """What each strategy added over all rounds (mean per seed): lesions, hyperintense ones, lesion-free cases."""
    facts = results["lesions"]
    lines = [
        "Cases each strategy added after the starting set (mean per seed): cases, lesions in them, "
        "T1-hyperintense lesions among those, cases without lesion.",
        "",
        "| strategy | cases | lesions | T1-hyperintense lesions | lesion-free cases |",
        "|---|---|---|---|---|",
    ]
    for s in strategies:
        per_seed = []
        for seed in results["seeds"]:
            added = [case for rnd in seed["strategies"][s][1:] for case in rnd["added"]]
            lesions = [lesion for case in added for lesion in facts[case]]
            per_seed.append(
                (
                    len(added),
                    len(lesions),
                    sum(lesion["contrast"] > 1 for lesion in lesions),
                    sum(not facts[c] for c in added),
                )
            )
        mean = np.mean(per_seed, axis=0)
        lines.append(f"| {s} | " + " | ".join(f"{v:.1f}" for v in mean) + " |")
    pool_lesions = [lesion for case in results["pool_ids"] for lesion in facts[case]]
    lines.append(
        f"| (whole pool) | {len(results['pool_ids'])} | {len(pool_lesions)} | "
        f"{sum(lesion['contrast'] > 1 for lesion in pool_lesions)} | {sum(not facts[c] for c in results['pool_ids'])} |"
    )
    return "\n".join(lines)


def report(results, png) -> dict:
    strategies = [s for s in STRATEGIES if s in results["seeds"][0]["strategies"]]
    pool_size = len(results["pool_ids"])
    summaries = {metric: analyse(results, strategies, pool_size, metric=metric) for metric in ("dice", "f1")}
    print(markdown(summaries["dice"], strategies, "lesion, per test case, original grid"))
    print()
    table = markdown(summaries["f1"], strategies, "lesions >= 3 mm radius")
    print(table.replace("Dice (", "Lesion-wise detection F1 (", 1).replace("full-data Dice", "full-data F1", 1))
    print()
    print(picks_table(results, strategies))
    if png:
        title = (
            f"Active learning on the SIMULATED lesion cohort ({results['channels']}, 2 mm, pool {pool_size}, "
            f"{len(results['seeds'])} seeds)"
        )
        plot(
            [
                (summaries["dice"], "lesion Dice (mean over test cases)"),
                (summaries["f1"], "detection F1, lesions >= 3 mm"),
            ],
            strategies,
            png,
            title,
        )
    return summaries


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=6000)
    parser.add_argument("--channels", default="T1w,FLAIR")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2,3,4; --quick 0,1)")
    parser.add_argument("--schedule", default="4,8,12,15,23", help="labelled cases after each round")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--patch", type=int, nargs=3, default=(48, 48, 48))
    parser.add_argument("--steps-per-scan", type=int, default=40)
    parser.add_argument("--min-steps", type=int, default=300)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--mc", type=int, default=4, help="MC-dropout passes")
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--merge", type=Path, nargs="*", default=(), help="with --analyse-only: JSONs to merge")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument(
        "--no-full",
        action="store_true",
        help="skip the full-data model (merge with a run of the same seeds that has it)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 cases, 2 seeds, 20-40 steps, 32^3")
    args = parser.parse_args(argv)
    if args.analyse_only:
        parts = [json.loads(p.read_text()) for p in (args.merge or [args.json])]
        seeds = merge_seeds([s for p in parts for s in p["seeds"]])
        if args.seeds:  # e.g. only the seeds that every strategy ran
            wanted = {int(s) for s in args.seeds.split(",")}
            seeds = [s for s in seeds if s["seed"] in wanted]
        results = {**parts[0], "seeds": seeds}
        return report(results, args.png)
    if args.quick:
        args.n, args.n_test, args.schedule = 10, 3, "2,3,5"
        args.seeds = args.seeds or "0,1"
        args.patch, args.steps_per_scan, args.min_steps, args.max_steps, args.mc = (32, 32, 32), 5, 20, 40, 2
    args.seeds = [int(s) for s in (args.seeds or "0,1,2,3,4").split(",")]
    args.schedule = [int(s) for s in args.schedule.split(",")]
    args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pool, test, config = prepare(args)
    log(f"{len(pool)} pool + {len(test)} test SIMULATED cases ({args.channels}) in {time.perf_counter() - t0:.0f} s")
    results = {
        "channels": args.channels,
        "first_seed": args.first_seed,
        "pool_ids": [c["id"] for c in pool],
        "test_ids": [c["id"] for c in test],
        "lesions": {c["id"]: c["lesions"] for c in pool + test},
        "schedule": args.schedule,
        "recipe": {
            "patch": list(args.patch),
            "steps_per_scan": args.steps_per_scan,
            "min_steps": args.min_steps,
            "max_steps": args.max_steps,
            "mc": args.mc,
            "top_k": args.top_k,
            "threads": args.threads,
        },
        "cpu_count": os.cpu_count(),
        "seeds": [],
    }
    if args.json and args.json.exists():
        previous = json.loads(args.json.read_text())
        results["seeds"] = [s for s in previous.get("seeds", []) if s["seed"] in args.seeds]
    for seed in args.seeds:
        if any(s["seed"] == seed for s in results["seeds"]):
            log(f"seed {seed}: already in {args.json}")
            continue
        results["seeds"].append(run_seed(seed, pool, test, config, args))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1, default=str))
            tmp.replace(args.json)
    return report(results, args.png)


if __name__ == "__main__":
    main()
