"""Benchmark consensus.staple / consensus.voting against SimpleITK: speed, memory, accuracy.

Data: ``simulation`` (the MNI152 2009a template shipped with nilearn, deformed into
simulated subjects, with simulated raters).  Nothing is downloaded, nothing real is used:
every panel here is SIMULATED from the MNI152 anatomy.

Modes
-----
``speed`` (default)
    Same run, same data: the 1 mm anatomy (197 x 233 x 189, labels 0..3), five simulated
    raters (expert, generous, conservative, sloppy, misses_components; seed 0), torch,
    numpy (BLAS) and SimpleITK limited to 2 threads.  Rows: a plain numpy majority vote
    (the floor: one pass over the votes per label), our ``majority_vote``, our
    ``staple_multilabel`` with its defaults and with ITK's options, SimpleITK's
    ``MultiLabelSTAPLEImageFilter``, our ``staple_binary`` (grey-matter masks) with its
    defaults and with ITK's options, SimpleITK's ``STAPLEImageFilter``.  Wall seconds are
    the best of ``--repeat`` runs (SimpleITK: one run).
``memory``
    Peak memory of ``staple_multilabel`` (defaults) at 1 mm with 8 raters, measured in a
    fresh child process that loads the panel from disk: the rise of the peak resident set
    (sampled every 2 ms from /proc/self/statm) over the call, the tracemalloc peak
    (numpy allocations; torch's allocator is not traced, hence the RSS figure) and the
    process's peak RSS (``resource.getrusage``, torch and its libraries included).
``accuracy``
    Dice against the simulated truth, per label, averaged over seeds (one subject with
    ``--lesions`` lesions and one panel per seed): majority vote, SimpleITK binary STAPLE
    per label (one-vs-rest, W >= 0.5), SimpleITK MultiLabelSTAPLE (undecided voxels count
    as wrong), and ours (defaults, plus ablations).  ``best peer`` is the per-label
    maximum of the three peers; ``gap`` is ours minus best peer, worst label.

Usage::

    .venv/bin/python bench/bench_staple.py                       # speed table (~1 min)
    .venv/bin/python bench/bench_staple.py --mode memory
    .venv/bin/python bench/bench_staple.py --mode accuracy --resolution 2 --seeds 0-7
    .venv/bin/python bench/bench_staple.py --mode accuracy --resolution 1 --seeds 0-5
    .venv/bin/python bench/bench_staple.py --mode accuracy --resolution 2 --seeds 0-2 \\
        --profiles expert,sloppy,sloppy
"""

from __future__ import annotations

import os

# Thread limits must be set before numpy / torch / SimpleITK load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simulation as sim
from consensus.staple import staple_binary, staple_multilabel
from consensus.voting import majority_vote

THREADS = 2
NAMES = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter", 4: "lesion"}


def _sitk():
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    return sitk


def _best(fn, repeat):
    fn()  # warm-up: first-touch allocations, lazy imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def numpy_majority_vote(segs: np.ndarray) -> np.ndarray:
    """Reference majority vote in plain numpy: count votes per label, argmax."""
    n_labels = int(segs.max()) + 1
    counts = np.zeros((n_labels, *segs.shape[1:]), dtype=np.uint8)
    for rater in segs:
        for label in range(n_labels):
            counts[label] += rater == label
    return counts.argmax(axis=0).astype(segs.dtype)


def _anatomy_panel(n_raters: int, seed: int = 0) -> np.ndarray:
    anatomy = sim.mni152_anatomy(resolution=1)
    profiles = [sim.RATER_PROFILES[i % len(sim.RATER_PROFILES)] for i in range(n_raters)]
    return sim.simulate_panel(anatomy.labels, profiles=profiles, seed=seed)


def run_speed(repeat: int) -> None:
    torch.set_num_threads(THREADS)
    sitk = _sitk()
    segs = _anatomy_panel(5)
    masks = (segs == 2).astype(np.uint8)
    print(
        f"data: MNI152 1 mm anatomy {segs.shape[1:]}, {segs.shape[0]} simulated raters, "
        f"labels {np.unique(segs).tolist()}, {THREADS} threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    rows = []
    t_np = _best(lambda: numpy_majority_vote(segs), repeat)
    rows.append(("numpy majority vote (floor)", t_np))
    rows.append(("ours majority_vote", _best(lambda: majority_vote(segs), repeat)))
    t_ml = _best(lambda: staple_multilabel(segs), repeat)
    rows.append(("ours staple_multilabel (defaults)", t_ml))
    rows.append(
        (
            "ours staple_multilabel (ITK model: all, global, any)",
            _best(lambda: staple_multilabel(segs, region="all", prior="global", overrule="any"), repeat),
        )
    )
    images = [sitk.GetImageFromArray(s) for s in segs]
    t0 = time.perf_counter()
    sitk.MultiLabelSTAPLE(images)
    t_itk_ml = time.perf_counter() - t0
    rows.append(("SimpleITK MultiLabelSTAPLE", t_itk_ml))
    t_bin = _best(lambda: staple_binary(masks), repeat)
    rows.append(("ours staple_binary (defaults), GM", t_bin))
    t_bin_itk_opts = _best(lambda: staple_binary(masks, region="all", prior="global"), repeat)
    rows.append(("ours staple_binary (all, global), GM", t_bin_itk_opts))
    mask_images = [sitk.GetImageFromArray(m) for m in masks]
    t0 = time.perf_counter()
    sitk.STAPLE(mask_images, 1.0)
    t_itk_bin = time.perf_counter() - t0
    rows.append(("SimpleITK STAPLE, GM", t_itk_bin))

    print(f"\n{'':40s}{'seconds':>10s}")
    for name, seconds in rows:
        print(f"{name:40s}{seconds:10.3f}")
    result = staple_multilabel(segs)
    print(
        f"\nstaple_multilabel defaults: {result.iterations} EM iterations, contested voxels "
        f"{result.region_voxels} ({100 * result.region_voxels / segs[0].size:.1f} %)"
    )
    print(f"speed-up vs SimpleITK MultiLabelSTAPLE: {t_itk_ml / t_ml:6.1f}x")
    print(f"staple_multilabel / numpy majority vote: {t_ml / t_np:6.2f}x")
    print(
        f"speed-up vs SimpleITK STAPLE (binary):  {t_itk_bin / t_bin:6.1f}x (defaults), "
        f"{t_itk_bin / t_bin_itk_opts:.1f}x (all, global)"
    )


def run_memory(n_raters: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "panel.npy"
        segs = _anatomy_panel(n_raters)
        np.save(path, segs)
        shape, nbytes = segs.shape, segs.nbytes
        del segs
        out = subprocess.run(
            [sys.executable, __file__, "--mode", "memory-child", str(path)], capture_output=True, text=True, check=True
        )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"data: {shape} uint8 ({nbytes / 2**20:.0f} MiB), staple_multilabel defaults")
    print(f"{'peak RSS rise during the call (sampled)':40s}{child['rss_rise'] / 2**20:10.0f} MiB")
    print(f"{'tracemalloc peak (numpy) during call':40s}{child['traced_peak'] / 2**20:10.0f} MiB")
    print(f"{'RSS before the call (libs + data)':40s}{child['baseline'] / 2**20:10.0f} MiB")
    print(f"{'process peak RSS before the call':40s}{child['rss_peak_before'] / 2**20:10.0f} MiB")
    print(f"{'process peak RSS after the call':40s}{child['rss_peak'] / 2**20:10.0f} MiB")
    print(f"{'output posterior':40s}{child['posterior'] / 2**20:10.0f} MiB")


def _rss() -> int:
    """Current resident set size in bytes (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(path: str) -> None:
    import threading

    torch.set_num_threads(THREADS)
    segs = np.load(path)
    staple_multilabel(segs[:, :8, :8, :8])  # import-time and first-call allocations
    baseline = _rss()
    max_rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    result = staple_multilabel(segs)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss())
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "rss_rise": peak[0] - baseline,
                "rss_peak": max_rss,
                "baseline": baseline,
                "rss_peak_before": max_rss_before,
                "traced_peak": traced_peak,
                "posterior": result.posterior.nbytes,
            }
        )
    )


def _dice(a, b):
    total = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / total if total else float("nan")


def run_accuracy(resolution: int, seeds: list[int], profiles: list[str], lesions: int) -> None:
    sitk = _sitk()
    torch.set_num_threads(THREADS)
    anatomy = sim.mni152_anatomy(resolution=resolution)
    methods = {
        "majority vote": None,
        "SimpleITK STAPLE (binary, per label)": None,
        "SimpleITK MultiLabelSTAPLE": None,
        "ours: staple_multilabel defaults": {},
        "ours: fitted posterior decides (overrule=any)": {"overrule": "any"},
        "ours: ITK model (region=all, prior=global, overrule=any)": {
            "region": "all",
            "prior": "global",
            "overrule": "any",
        },
        "ours: staple_binary defaults, per label": "binary",
    }
    scores = {name: [] for name in methods}
    for seed in seeds:
        subject = sim.simulate_subject(anatomy, seed=seed, n_lesions=lesions)
        truth = subject.labels
        segs = sim.simulate_panel(truth, profiles=profiles, seed=seed)
        labels = np.unique(np.concatenate([np.unique(truth), np.unique(segs)]))
        labels = labels[labels <= 4]

        def per_label(label_map, truth=truth, labels=labels):
            return [_dice(label_map == k, truth == k) for k in labels]

        scores["majority vote"].append(per_label(majority_vote(segs).labels))
        images = [sitk.GetImageFromArray(s) for s in segs]
        itk_ml = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE(images))
        scores["SimpleITK MultiLabelSTAPLE"].append(per_label(itk_ml))
        itk_bin, ours_bin = [], []
        for k in labels:
            masks = (segs == k).astype(np.uint8)
            w = sitk.GetArrayFromImage(sitk.STAPLE([sitk.GetImageFromArray(m) for m in masks], 1.0))
            itk_bin.append(_dice(w >= 0.5, truth == k))
            ours_bin.append(_dice(staple_binary(masks).probability >= 0.5, truth == k))
        scores["SimpleITK STAPLE (binary, per label)"].append(itk_bin)
        scores["ours: staple_binary defaults, per label"].append(ours_bin)
        for name, options in methods.items():
            if isinstance(options, dict):
                scores[name].append(per_label(staple_multilabel(segs, **options).labels))
        print(f"seed {seed} done", file=sys.stderr, flush=True)

    means = {name: np.nanmean(np.array(v, dtype=float), axis=0) for name, v in scores.items()}
    peers = ["majority vote", "SimpleITK STAPLE (binary, per label)", "SimpleITK MultiLabelSTAPLE"]
    best = np.max([means[p] for p in peers], axis=0)
    print(
        f"panel: {', '.join(profiles)}; MNI152 {resolution} mm; {len(seeds)} seeds "
        f"({seeds[0]}..{seeds[-1]}); {lesions} lesions per subject; Dice vs simulated truth"
    )
    header = "| method | " + " | ".join(NAMES[int(k)] for k in labels) + " | mean | gap |"
    print(header)
    print("|" + "---|" * (len(labels) + 3))
    for name, m in means.items():
        gap = "" if name in peers else f"{np.min(m - best):+.4f}"
        print(f"| {name} | " + " | ".join(f"{x:.4f}" for x in m) + f" | {m.mean():.4f} | {gap} |")
    print("| best peer | " + " | ".join(f"{x:.4f}" for x in best) + f" | {best.mean():.4f} | |")


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("speed", "memory", "accuracy", "memory-child"), default="speed")
    parser.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--raters", type=int, default=8, help="memory mode: panel size")
    parser.add_argument("--resolution", type=int, default=2, choices=(1, 2))
    parser.add_argument("--seeds", default="0-7")
    parser.add_argument("--profiles", default=",".join(sim.RATER_PROFILES))
    parser.add_argument("--lesions", type=int, default=4)
    args = parser.parse_args()
    if args.mode == "speed":
        run_speed(args.repeat)
    elif args.mode == "memory":
        run_memory(args.raters)
    elif args.mode == "memory-child":
        _memory_child(args.path)
    else:
        run_accuracy(args.resolution, _parse_seeds(args.seeds), args.profiles.split(","), args.lesions)


if __name__ == "__main__":
    main()
